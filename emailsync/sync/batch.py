"""`Batch`: one batch of a sync, the one model from the listing that makes it to what storing it did.

The backfill walk plans it (`plan_next_batch`: ids, window, where the walk goes on) or a mirror step
makes it (its operations), the fetch downloads its messages, storing fills in what storing did, and the
`SyncRun` records it: progress, checkpoint, summary.

It is also what travels through Prefect futures, so it never holds the messages themselves: Prefect
keeps every task result of a flow run in memory until the run ends (and walks every task parameter),
which would keep a whole mailbox alive. The downloaded messages wait in the `SyncRun` under the batch's
`key` (`park` / `parked`) until the batch is stored.
"""

from __future__ import annotations

import uuid

from pydantic import BaseModel, Field

from emailsync.models import BackfillCursor, SyncWindow
from emailsync.sync.mirror import MirrorOps


def _new_key() -> str:
    return uuid.uuid4().hex


class Batch(BaseModel):
    key: str = Field(default_factory=_new_key)  # where its downloaded messages wait in the SyncRun
    ids: list[str] = Field(default_factory=list)  # the messages it handles: listed, or its operations'
    window: SyncWindow | None = None  # backfill: the window of the last page listed into it
    cursor_after: BackfillCursor | None = None  # backfill: where the walk goes on after it; None: the end
    ops: MirrorOps | None = None  # mirror batches (history, reconcile): what to do besides storing
    history_id_after: str | None = None  # mirror batches: lastHistoryId once it is applied
    list_calls: int = 0  # Gmail listing calls that planned it (pages, and jumps over empty weeks)
    # what fetching it did
    emails_fetched: int = 0
    already_enriched: int = 0  # listed, not downloaded: stored with an enrichment before
    fetch_seconds: float = 0.0
    # what storing it did (`SyncSession.store_batch`)
    stored: bool = False
    emails_stored: int = 0
    emails_enriched: int = 0
    parse_errors: int = 0  # messages stored with at least one parse error
    labels_updated: int = 0
    emails_removed: int = 0
    tag_counts: dict[str, int] = Field(default_factory=dict)
    parse_seconds: float = 0.0
    enrich_seconds: float = 0.0
    store_seconds: float = 0.0  # email writes, on the background writer (overlapping enrichment)
    # the time storing took end to end, which the overlap makes less than parse + enrich + store
    wall_seconds: float = 0.0
