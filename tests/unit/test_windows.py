"""Backfill windows, the walk over them and the progress shown while it runs (pure domain logic)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from emailsync.gmail.types import MessagePage
from emailsync.models import BackfillCursor
from emailsync.sync.backfill import plan_next_batch, start_cursor
from emailsync.sync.progress_math import MAX_RUNNING_PERCENT, monotone_percent, percent_complete
from emailsync.sync.windows import WEEK, lookback_bound, weeks_spanned, window_for_newest

NOW = datetime(2026, 11, 25, 12, 30, 15, 500_000, tzinfo=UTC)


def test_a_window_is_the_week_ending_just_after_the_newest_unwalked_message():
    window = window_for_newest(NOW)
    assert window is not None
    assert window.end == datetime(2026, 11, 25, 12, 30, 16, tzinfo=UTC)  # whole seconds, newest included
    assert window.end - window.start == WEEK


def test_the_next_window_jumps_over_an_empty_stretch_to_the_next_older_message():
    previous = window_for_newest(NOW)
    assert previous is not None
    older = NOW - timedelta(days=400)
    window = window_for_newest(older, older_than=previous.start)
    assert window is not None
    assert window.start <= older < window.end and window.end <= previous.start


def test_windows_never_overlap_the_window_walked_before():
    previous = window_for_newest(NOW)
    assert previous is not None
    just_before = previous.start - timedelta(milliseconds=1)
    window = window_for_newest(just_before, older_than=previous.start)
    assert window is not None and window.end == previous.start


def test_the_lookback_bound_clips_the_last_window_and_ends_the_walk():
    bound = lookback_bound(NOW, 2)
    assert bound == datetime(2026, 11, 11, 12, 30, 15, tzinfo=UTC)
    clipped = window_for_newest(bound + timedelta(days=3), bound=bound)
    assert clipped is not None and clipped.start == bound
    assert window_for_newest(bound - timedelta(seconds=1), bound=bound) is None


def test_no_older_message_ends_the_walk():
    assert window_for_newest(None) is None


def test_no_lookback_means_the_whole_mailbox_and_nonsense_is_refused():
    assert lookback_bound(NOW, None) is None
    with pytest.raises(ValueError):
        lookback_bound(NOW, 0)


def test_weeks_spanned_counts_the_windows_a_walk_without_jumps_would_list():
    assert weeks_spanned(NOW, NOW - timedelta(days=700)) == 101


# ------------------------------------------------------------------------------------------ the walk


class DatedMailbox:
    """Message dates, newest first, listed the way Gmail lists them (`after <= date < before`)."""

    def __init__(self, dates: list[datetime]) -> None:
        self.messages = sorted(((date, f"m{i:03d}") for i, date in enumerate(dates)), reverse=True)
        self.list_calls = 0

    def list_messages(self, after, before, page_token, max_results):
        self.list_calls += 1
        matches = [
            message_id
            for date, message_id in self.messages
            if (after is None or date >= after) and (before is None or date < before)
        ]
        offset = int(page_token or 0)
        page = matches[offset : offset + max_results]
        more = offset + max_results < len(matches)
        return MessagePage(ids=page, next_page_token=str(offset + max_results) if more else None)

    def newest_message_before(self, before: datetime) -> datetime | None:
        self.list_calls += 1
        return next((date for date, _ in self.messages if date < before), None)


def walk(mailbox: DatedMailbox, batch_size: int, bound: datetime | None = None) -> list[list[str]]:
    cursor: BackfillCursor | None = start_cursor(mailbox, now=NOW, bound=bound, start_history_id="1")
    batches = []
    while cursor is not None:
        plan = plan_next_batch(mailbox, cursor, batch_size=batch_size, bound=bound)
        batches.append(plan.ids)
        cursor = plan.cursor_after
    return batches


def test_the_walk_lists_every_message_once_newest_first_in_full_batches_across_sparse_weeks():
    dates = [NOW - timedelta(days=d, hours=h) for d in (0, 1, 30, 31, 365, 366, 2000) for h in range(3)]
    mailbox = DatedMailbox(dates)
    batches = walk(mailbox, batch_size=4)
    listed = [message_id for batch in batches for message_id in batch]
    assert listed == [message_id for _, message_id in mailbox.messages]
    assert all(len(batch) == 4 for batch in batches[:-1])
    assert mailbox.list_calls < weeks_spanned(NOW, min(dates)) / 10


def test_the_walk_stops_at_the_lookback_bound():
    dates = [NOW - timedelta(days=d) for d in (0, 3, 10, 13, 15, 100)]
    mailbox = DatedMailbox(dates)
    batches = walk(mailbox, batch_size=100, bound=lookback_bound(NOW, 2))
    assert sorted(message_id for batch in batches for message_id in batch) == ["m000", "m001", "m002", "m003"]


def test_a_resumed_walk_continues_exactly_where_the_checkpoint_points():
    dates = [NOW - timedelta(days=d, minutes=m) for d in (0, 20, 40) for m in range(5)]
    mailbox = DatedMailbox(dates)
    first = start_cursor(mailbox, now=NOW, bound=None, start_history_id="1")
    assert first is not None
    plan = plan_next_batch(mailbox, first, batch_size=7, bound=None)
    assert plan.cursor_after is not None
    checkpoint = BackfillCursor.from_firestore(plan.cursor_after.to_firestore())  # as stored and read back
    rest = plan_next_batch(mailbox, checkpoint, batch_size=100, bound=None)
    assert plan.ids + rest.ids == [message_id for _, message_id in mailbox.messages]
    assert rest.cursor_after is None


def test_an_empty_mailbox_has_nothing_to_walk():
    assert start_cursor(DatedMailbox([]), now=NOW, bound=None, start_history_id="1") is None


# ------------------------------------------------------------------------------------------ progress


def test_progress_is_the_share_of_the_estimate_capped_below_completion():
    assert percent_complete(50, 200, batches=1) == 25
    assert percent_complete(250, 200, batches=3) == MAX_RUNNING_PERCENT


def test_without_an_estimate_batches_stand_in_and_never_reach_completion():
    shown = [percent_complete(0, None, batches=n) for n in range(0, 500, 7)]
    assert shown == sorted(shown) and shown[0] == 0 and max(shown) <= MAX_RUNNING_PERCENT


def test_progress_never_goes_back():
    assert monotone_percent(40, 30) == 40 and monotone_percent(40, 45) == 45
