"""Planning the backfill walk: which message ids make up the next batch, and where the walk resumes.

The walk position is a `BackfillCursor`: the week window being listed and the page token of its next
page (None = first page). A batch is filled with whole pages, across windows if a window holds fewer
messages than a batch, so sparse mailboxes still get full batches; the cursor after a batch is exactly
where the next `list_messages` call starts, which makes it the checkpoint saved once the batch is stored.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from emailsync.models import BackfillCursor, SyncWindow
from emailsync.sync.batch import Batch
from emailsync.sync.windows import first_probe_before, window_for_newest

if TYPE_CHECKING:
    from emailsync.gmail.types import MessagePage


class MailboxLister(Protocol):
    """The two GmailClient calls the walk needs."""

    def list_messages(
        self, after: datetime | None, before: datetime | None, page_token: str | None, max_results: int
    ) -> MessagePage: ...

    def newest_message_before(self, before: datetime) -> datetime | None: ...


def start_cursor(
    lister: MailboxLister, *, now: datetime, bound: datetime | None, start_history_id: str | None
) -> BackfillCursor | None:
    """The cursor of a fresh backfill: the first page of the newest week. None for an empty mailbox."""
    window = window_for_newest(lister.newest_message_before(first_probe_before(now)), bound=bound)
    if window is None:
        return None
    return BackfillCursor(
        window_start=window.start, window_end=window.end, page_token=None, start_history_id=start_history_id
    )


def plan_next_batch(
    lister: MailboxLister, cursor: BackfillCursor, *, batch_size: int, bound: datetime | None
) -> Batch:
    """The next batch: up to `batch_size` ids listed from `cursor`, and `cursor_after` (the counts on it
    unchanged; None: the walk is over once this batch is stored)."""
    batch = Batch()
    position: BackfillCursor | None = cursor
    seen: set[str] = set()
    while position is not None and len(batch.ids) < batch_size:
        window = SyncWindow(start=position.window_start, end=position.window_end)
        page = lister.list_messages(
            after=window.start,
            before=window.end,
            page_token=position.page_token,
            max_results=batch_size - len(batch.ids),
        )
        batch.list_calls += 1
        batch.window = window
        for message_id in page.ids:
            if message_id not in seen:  # windows may touch at a boundary second
                seen.add(message_id)
                batch.ids.append(message_id)
        if page.next_page_token:
            position = position.model_copy(update={"page_token": page.next_page_token})
            continue
        batch.list_calls += 1  # newest_message_before: the jump over empty weeks
        next_window = window_for_newest(
            lister.newest_message_before(window.start), older_than=window.start, bound=bound
        )
        position = (
            None
            if next_window is None
            else position.model_copy(
                update={"window_start": next_window.start, "window_end": next_window.end, "page_token": None}
            )
        )
    batch.cursor_after = position
    return batch
