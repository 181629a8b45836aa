"""Gmail tasks: profile, history, the start of the backfill walk, batch fetching (list + get), and the
mirror's reads (stored states, the mailbox listing of a reconcile)."""

from __future__ import annotations

from datetime import datetime

from prefect import task
from prefect.cache_policies import NO_CACHE

from emailsync.gmail.types import GmailProfile, HistoryChanges
from emailsync.models import BackfillCursor
from emailsync.sync.backfill import start_cursor
from emailsync.sync.batch import Batch
from emailsync.sync.mirror import StoredState
from emailsync.sync.pipeline import SyncSession
from emailsync.sync.plan import BatchRequest
from emailsync.sync.run import SyncRun
from tasks.common import RETRY_POLICY
from tasks.enrichment import warm_up_enricher


def _session(run: SyncRun) -> SyncSession:
    assert run.session is not None, "the run's session is made when `run.reported()` is entered"
    return run.session


@task(name="read-gmail-profile", cache_policy=NO_CACHE, **RETRY_POLICY)
def read_gmail_profile(run: SyncRun) -> GmailProfile:
    """Mailbox size and the historyId the next incremental sync starts from."""
    return _session(run).gmail.get_profile()


@task(name="estimate-messages-since", cache_policy=NO_CACHE, **RETRY_POLICY)
def estimate_messages_since(run: SyncRun, bound: datetime) -> int:
    """How many messages a look-back-bounded backfill will walk (Gmail's resultSizeEstimate)."""
    page = _session(run).gmail.list_messages(after=bound, before=None, page_token=None, max_results=1)
    return page.result_size_estimate


@task(name="find-backfill-start", cache_policy=NO_CACHE, **RETRY_POLICY)
def find_backfill_start(
    run: SyncRun, now: datetime, bound: datetime | None, start_history_id: str
) -> BackfillCursor | None:
    """The week window of the newest message (None: nothing to back-fill), checkpointed at once.

    Checkpointed before any batch is stored: a sync killed after storing mail but before its first
    checkpoint then resumes with the same start historyId, and the catch-up after the backfill still
    applies the changes made to what it had stored."""
    cursor = start_cursor(_session(run).gmail, now=now, bound=bound, start_history_id=start_history_id)
    if cursor is not None:
        run.checkpoint(cursor)
    return cursor


@task(name="list-history-changes", cache_policy=NO_CACHE, **RETRY_POLICY)
def list_history_changes(run: SyncRun, start_history_id: str) -> HistoryChanges:
    """Ids added since `start_history_id`; HistoryExpiredError (fatal, not retried) when it is too old."""
    return _session(run).gmail.list_history(start_history_id)


@task(name="list-mailbox-labels", cache_policy=NO_CACHE, **RETRY_POLICY)
def list_mailbox_labels(run: SyncRun, after: datetime | None) -> dict[str, list[str]]:
    """Every message of the mailbox's default listing (since `after`) with its labels, from id listings
    alone (for a reconcile)."""
    return _session(run).gmail.list_mailbox_labels(after)


@task(name="list-trash-and-spam", cache_policy=NO_CACHE, **RETRY_POLICY)
def list_trash_and_spam(run: SyncRun, after: datetime | None) -> set[str]:
    """Ids in the trash or spam (since `after`): a reconcile's ghosts that may still come back."""
    return _session(run).gmail.list_trash_and_spam_ids(after)


@task(name="read-stored-states", cache_policy=NO_CACHE, **RETRY_POLICY)
def read_stored_states(run: SyncRun, ids: list[str]) -> dict[str, StoredState]:
    """Labels, enrichment and tombstone of the stored emails among `ids`."""
    session = _session(run)
    return session.emails.states(session.provider_user_id, ids)


@task(name="read-all-stored-states", cache_policy=NO_CACHE, **RETRY_POLICY)
def read_all_stored_states(run: SyncRun) -> dict[str, StoredState]:
    """Labels, enrichment and tombstone of every stored email of the user (for a reconcile)."""
    session = _session(run)
    return session.emails.all_states(session.provider_user_id)


@task(name="fetch-email-batch", cache_policy=NO_CACHE, **RETRY_POLICY)
def fetch_email_batch(run: SyncRun, request: BatchRequest) -> Batch:
    """List the next backfill batch from the request's cursor (or take its ids) and download the
    messages not stored yet; the messages wait in the run, the batch travels.

    Runs one batch ahead of `process_email_batch`, so the quota-bound download of batch N+1 overlaps
    the CPU-bound enrichment of batch N.
    """
    session = _session(run)
    if request.step is not None:
        batch, messages = session.fetch_mirror_batch(request.step)
    elif request.cursor is not None:
        batch, messages = session.fetch_backfill_batch(
            request.cursor, batch_size=request.batch_size, bound=request.bound
        )
    else:
        batch, messages = session.fetch_ids(list(request.ids))
    return run.park(batch, messages)


class PlanningTasks:
    """`emailsync.sync.plan.PlanningCalls` answered by the retried tasks above."""

    def __init__(self, run: SyncRun) -> None:
        self.run = run

    def list_history(self, start_history_id: str) -> HistoryChanges:
        return list_history_changes(self.run, start_history_id)

    def read_profile(self) -> GmailProfile:
        return read_gmail_profile(self.run)

    def estimate_messages_since(self, bound: datetime) -> int:
        return estimate_messages_since(self.run, bound)

    def find_backfill_start(
        self, now: datetime, bound: datetime | None, start_history_id: str
    ) -> BackfillCursor | None:
        return find_backfill_start(self.run, now, bound, start_history_id)

    def stored_states(self, ids: list[str]) -> dict[str, StoredState]:
        return read_stored_states(self.run, ids)

    def list_mailbox(self, after: datetime | None) -> dict[str, list[str]]:
        return list_mailbox_labels(self.run, after)

    def all_stored_states(self) -> dict[str, StoredState]:
        return read_all_stored_states(self.run)

    def list_trash_and_spam(self, after: datetime | None) -> set[str]:
        return list_trash_and_spam(self.run, after)

    def warm_up_enricher(self) -> None:
        warm_up_enricher.submit(_session(self.run).enricher)
