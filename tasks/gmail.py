"""Gmail tasks: profile, history, the start of the backfill walk and batch fetching (list + get)."""

from __future__ import annotations

from datetime import datetime

from prefect import task
from prefect.cache_policies import NO_CACHE

from emailsync.gmail.client import GmailProfile, HistoryChanges
from emailsync.models import BackfillCursor
from emailsync.sync.backfill import start_cursor
from tasks.common import RETRY_POLICY, FetchedBatchRef, SyncResources


@task(name="read-gmail-profile", cache_policy=NO_CACHE, **RETRY_POLICY)
def read_gmail_profile(resources: SyncResources) -> GmailProfile:
    """Mailbox size and the historyId the next incremental sync starts from."""
    return resources.session.gmail.get_profile()


@task(name="estimate-messages-since", cache_policy=NO_CACHE, **RETRY_POLICY)
def estimate_messages_since(resources: SyncResources, bound: datetime) -> int:
    """How many messages a look-back-bounded backfill will walk (Gmail's resultSizeEstimate)."""
    page = resources.session.gmail.list_messages(after=bound, before=None, page_token=None, max_results=1)
    return page.result_size_estimate


@task(name="find-backfill-start", cache_policy=NO_CACHE, **RETRY_POLICY)
def find_backfill_start(
    resources: SyncResources, now: datetime, bound: datetime | None, start_history_id: str
) -> BackfillCursor | None:
    """The week window of the newest message (None: nothing to back-fill)."""
    return start_cursor(resources.session.gmail, now=now, bound=bound, start_history_id=start_history_id)


@task(name="list-history-changes", cache_policy=NO_CACHE, **RETRY_POLICY)
def list_history_changes(resources: SyncResources, start_history_id: str) -> HistoryChanges:
    """Ids added since `start_history_id`; HistoryExpiredError (fatal, not retried) when it is too old."""
    return resources.session.gmail.list_history(start_history_id)


@task(name="fetch-email-batch", cache_policy=NO_CACHE, **RETRY_POLICY)
def fetch_email_batch(
    resources: SyncResources,
    *,
    cursor: BackfillCursor | None = None,
    ids: list[str] | None = None,
    batch_size: int,
    bound: datetime | None = None,
) -> FetchedBatchRef:
    """List the next backfill batch from `cursor` (or take `ids`) and download the messages not stored yet.

    Runs one batch ahead of `process_email_batch`, so the quota-bound download of batch N+1 overlaps
    the CPU-bound enrichment of batch N.
    """
    session = resources.session
    if cursor is not None:
        fetched = session.fetch_backfill_batch(cursor, batch_size=batch_size, bound=bound)
    else:
        fetched = session.fetch_ids(list(ids or []))
    return resources.park(fetched)
