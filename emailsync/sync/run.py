"""`SyncRun`: one sync of one provider user, from its pending document to its final one.

It holds the sync id, the target user, the summary the flow returns, the per-user lease (acquire, take
over an expired one or one whose process is gone and mark the dead sync's document, keep it alive with
a heartbeat thread, release), the progress transitions (pending → in_progress → completed | failed),
the messages of fetched batches waiting to be stored, and what follows a stored batch: its progress
write, the checkpoint (cursor + lease renewal) and its counts in the summary. `describe_error` is the
one function that turns an exception into the human-readable `syncProgress.error`.

Plain Python (no Prefect): the orchestration passes its logger and its progress view in.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel

from emailsync.errors import LeaseHeldError, describe_error
from emailsync.models import BackfillCursor, SyncMode, SyncState, SyncTrigger
from emailsync.sync.batch import Batch
from emailsync.sync.lease import LeaseHeartbeat, holder_identity, holder_is_gone
from emailsync.sync.progress_math import monotone_percent, percent_complete
from emailsync.sync.summary import SyncSummary

if TYPE_CHECKING:
    from emailsync.firestore.progress import ProgressWriter
    from emailsync.firestore.sync_state import SyncStateRepository
    from emailsync.gmail.types import GmailMessage
    from emailsync.sync.pipeline import SyncSession

__all__ = ["LeaseAttempt", "ProgressView", "SyncRun", "describe_error"]

SKIP_REASON_ALREADY_SYNCING = "already_syncing"


class ProgressView(Protocol):
    """A second view of the progress besides the `syncProgress` document (Prefect's artifacts)."""

    def start(self) -> None: ...

    def show(self, percent: int) -> None: ...

    def finish(self, summary: SyncSummary) -> None: ...


class _NoView:
    def start(self) -> None:
        pass

    def show(self, percent: int) -> None:
        pass

    def finish(self, summary: SyncSummary) -> None:
        pass


class LeaseAttempt(BaseModel):
    acquired: bool
    state: SyncState  # after the attempt: who holds the lease, and the cursors this sync starts from
    taken_over_from: str | None = None  # the sync whose expired lease this one took over
    stale_slot_lease_id: str | None = None  # the Prefect slot lease that sync held (now to release)


class SyncRun:
    """Everything one sync knows about itself. A plain object on purpose: Prefect neither hashes it
    (tasks use NO_CACHE) nor walks into it when it is a task parameter."""

    def __init__(
        self,
        *,
        sync_id: str,
        provider_user_id: str,
        trigger: SyncTrigger,
        app_user_id: str,
        family_id: str | None,
        progress: ProgressWriter,
        sync_state: SyncStateRepository,
        lease_timeout_seconds: float,
        lease_renew_seconds: float | None = None,
        flow_run_id: str | None = None,
        logger: logging.Logger | logging.LoggerAdapter[Any] | None = None,
        view: ProgressView | None = None,
    ) -> None:
        self.sync_id = sync_id
        self.provider_user_id = provider_user_id
        self.trigger = trigger
        self.app_user_id = app_user_id
        self.family_id = family_id
        self.progress = progress
        self.sync_state = sync_state
        self.lease_timeout_seconds = lease_timeout_seconds
        self.heartbeat = LeaseHeartbeat(
            self._renew_lease,
            lease_renew_seconds or lease_timeout_seconds / 3,
            name=f"lease-heartbeat-{sync_id}",
            log=logger,
        )
        self.stale_slot_lease_id: str | None = None
        self.flow_run_id = flow_run_id
        self.logger = logger or logging.getLogger(__name__)
        self.view: ProgressView = view or _NoView()
        self.summary = SyncSummary(
            sync_id=sync_id, provider_user_id=provider_user_id, trigger=trigger, flow_run_id=flow_run_id
        )
        self.state: SyncState | None = None  # the sync state once the lease is ours
        self.skipped = False
        self.percent = 0
        self.last_batch_seconds = 0.0  # domain time of the batch stored last (for the overhead figure)
        self.session: SyncSession | None = None
        self._connect: Callable[[], SyncSession] | None = None
        self._parked: dict[str, list[GmailMessage]] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------------------------ lease

    def create_pending(self, *, reopen: bool = False) -> None:
        """The pending document; `reopen`: this sync id may already have one that a failed or crashed run
        of the same flow run left (a retry, e.g. from the Prefect UI): it is reopened, progress kept."""
        document = self.progress.create_pending(
            self.sync_id, self.app_user_id, self.family_id, self.provider_user_id, self.trigger, reopen=reopen
        )
        attempt = (document.details.model_extra or {}).get("attempt")
        if isinstance(attempt, int) and attempt > 1:
            self.summary.attempt = attempt
            self.logger.info(
                "sync %s reopened for attempt %d (a retried run); it resumes from the checkpoint",
                self.sync_id,
                attempt,
            )

    def acquire_lease(self, owner: str) -> LeaseAttempt:
        """Take the per-user lease (free, expired, already ours, or held by a process of this machine
        that is gone); the state tells who holds it else."""
        repository = self.sync_state
        previous = repository.get(self.provider_user_id)
        holder = holder_identity()
        acquired = repository.acquire_lease(
            self.provider_user_id, self.sync_id, owner, self.lease_timeout_seconds, holder=holder
        )
        if not acquired and holder_is_gone(previous.lease_holder):
            # Killed on this machine: no need to wait for its lease to expire.
            acquired = repository.acquire_lease(
                self.provider_user_id,
                self.sync_id,
                owner,
                self.lease_timeout_seconds,
                holder=holder,
                take_over_from=previous.active_sync_id,
            )
        dead = previous.active_sync_id
        taken_over = dead if acquired and dead not in (None, self.sync_id) else None
        return LeaseAttempt(
            acquired=acquired,
            state=repository.get(self.provider_user_id),
            taken_over_from=taken_over,
            stale_slot_lease_id=previous.slot_lease_id if taken_over else None,
        )

    def hold(self, attempt: LeaseAttempt) -> None:
        """Act on a lease attempt: skip when another sync holds the lease, else keep the state, keep the
        lease alive (heartbeat) and say that the dead sync whose lease was taken over was interrupted."""
        if not attempt.acquired:
            active = attempt.state.active_sync_id
            self.logger.info("skipped: sync %s already running for %s", active, self.provider_user_id)
            self.progress.skip(
                self.sync_id, active, SKIP_REASON_ALREADY_SYNCING, flow_run_id=self.flow_run_id
            )
            self.skipped = True
            self.summary.skipped, self.summary.active_sync_id = True, active
            return
        self.state = attempt.state
        self.heartbeat.start()
        if attempt.taken_over_from:
            # Its worker died (or hung) without finishing its progress document: say so now, before this
            # sync does anything else, instead of leaving it "in progress" forever; this sync resumes the
            # work from the checkpoint.
            dead = attempt.taken_over_from
            self.logger.warning("sync %s took over the lease of sync %s (stopped)", self.sync_id, dead)
            self.stale_slot_lease_id = attempt.stale_slot_lease_id
            self._mark_interrupted(dead)

    def _mark_interrupted(self, interrupted_sync_id: str) -> None:
        try:
            self.progress.fail(
                interrupted_sync_id,
                f"the sync was interrupted (its worker stopped); sync {self.sync_id} resumed it",
                resumed_by=self.sync_id,
            )
        except Exception as exc:  # already finished (it was slow, not dead), or its document is gone
            self.logger.info("sync %s not marked interrupted: %s", interrupted_sync_id, exc)

    def _renew_lease(self) -> bool:
        return self.sync_state.renew_lease(self.provider_user_id, self.sync_id, self.lease_timeout_seconds)

    def record_slot_lease(self, slot_lease_id: str | None) -> None:
        """Keep the id of this sync's Prefect slot lease beside the lease, for a sync taking over."""
        try:
            self.sync_state.record_slot_lease(self.provider_user_id, self.sync_id, slot_lease_id)
        except Exception as exc:  # then a taker waits for the slot's own lease to expire instead
            self.logger.warning("could not record the slot lease of sync %s: %s", self.sync_id, exc)

    def release_lease(self) -> None:
        self.heartbeat.stop()
        try:
            self.sync_state.release_lease(self.provider_user_id, self.sync_id)
        except Exception as exc:  # the lease then expires on its own after lease_timeout_seconds
            self.logger.warning("could not release the lease of sync %s: %s", self.sync_id, exc)

    # ------------------------------------------------------------------------------------ progress

    def fail(self, exc: BaseException | str, **details: Any) -> None:
        """Record the failure; a progress document already finished (or missing) must not hide the cause."""
        cause = exc if isinstance(exc, str) else describe_error(exc)
        try:
            self.progress.fail(self.sync_id, cause, **details)
        except Exception as write_error:
            self.logger.warning("could not mark sync %s failed: %s", self.sync_id, write_error)

    def start(self, mode: SyncMode, total_estimate: int | None) -> None:
        """pending → in_progress, in the mode the plan chose."""
        self.summary.mode = mode
        self.summary.emails_total_estimate = total_estimate
        self.progress.start(self.sync_id, mode, self.flow_run_id, total_estimate)
        self.view.start()

    def connect_with(self, connect: Callable[[], SyncSession]) -> None:
        """How the session (Gmail client, repositories, enricher) is made once `reported()` is entered."""
        self._connect = connect

    @contextlib.contextmanager
    def reported(self) -> Iterator[SyncRun]:
        """The sync's body: completed document when it ends, failed document (with `describe_error`) when
        it raises; the lease is released and parked batches dropped either way."""
        started = time.perf_counter()
        try:
            if self.session is None and self._connect is not None:
                self.session = self._connect()
            yield self
            summary = self.summary
            self.count_gmail_calls()
            summary.timings.wall_seconds = time.perf_counter() - started
            self.progress.complete(self.sync_id, trigger=self.trigger, **summary.progress_details())
            self.view.finish(summary)
            self.logger.info(
                "sync %s (%s) of %s completed: %d emails processed, %d stored, %d batches in %.1fs",
                self.sync_id,
                summary.mode.value if summary.mode else "?",
                self.provider_user_id,
                summary.emails_processed,
                summary.emails_stored,
                summary.batches,
                summary.timings.wall_seconds,
            )
        except BaseException as exc:
            cause = describe_error(exc)
            self.logger.error("sync %s of %s failed: %s", self.sync_id, self.provider_user_id, cause)
            self.summary.error = cause
            self.summary.timings.wall_seconds = time.perf_counter() - started
            self.count_gmail_calls()
            self.fail(cause, **self.summary.progress_details())
            try:
                self.view.finish(self.summary)  # the end-of-run view shows failed runs too
            except Exception as view_error:
                self.logger.warning("could not show the summary of sync %s: %s", self.sync_id, view_error)
            raise
        finally:
            with self._lock:
                self._parked.clear()
            self.release_lease()

    def count_gmail_calls(self) -> None:
        """Fold the Gmail client's counters (retries, 429s, vanished messages) into the summary."""
        gmail = getattr(self.session, "gmail", None)
        stats = getattr(gmail, "stats", None)
        if stats is not None:
            self.summary.count_gmail(stats)

    # ------------------------------------------------------------------------------------ batches

    def resume_counts(self, emails_processed: int, batches: int) -> None:
        self.summary.emails_processed, self.summary.batches = emails_processed, batches

    def park(self, batch: Batch, messages: list[GmailMessage]) -> Batch:
        """Keep a fetched batch's messages until it is stored; what travels through Prefect is the batch."""
        with self._lock:
            self._parked[batch.key] = messages
        return batch

    def parked(self, batch: Batch) -> list[GmailMessage]:
        with self._lock:
            return self._parked[batch.key]

    def checkpoint(self, cursor: BackfillCursor | None, *, history_id: str | None = None) -> None:
        """Save where the backfill resumes (when given; `history_id`: where history does) and renew the
        lease, in one conditional write. LeaseHeldError when another sync took the lease over."""
        if not self.sync_state.checkpoint(
            self.provider_user_id, self.sync_id, cursor, self.lease_timeout_seconds, history_id=history_id
        ):
            active = self.sync_state.get(self.provider_user_id).active_sync_id
            raise LeaseHeldError(
                f"sync {self.sync_id} lost its lease on provider user {self.provider_user_id} "
                f"to sync {active} (presumed dead after {self.lease_timeout_seconds:g}s without renewal)"
            )

    def record(self, batch: Batch, cursor_after: BackfillCursor | None) -> None:
        """After a stored batch: its progress, then the checkpoint (`cursor_after`, the plan's, with the
        counts), then the batch counted in the summary and its messages dropped. Nothing is counted when
        the checkpoint fails, so a batch stored again by a retry is counted once."""
        assert batch.stored, "only a stored batch is recorded"
        started = time.perf_counter()
        summary = self.summary
        processed, batches = summary.emails_processed + len(batch.ids), summary.batches + 1
        total = summary.emails_total_estimate
        percent = monotone_percent(self.percent, percent_complete(processed, total, batches))
        self.progress.update(
            self.sync_id,
            percent,
            emails_processed=processed,
            emails_total_estimate=total,
            batches=batches,
            current_window=batch.window,
        )
        if cursor_after is not None:
            cursor_after = cursor_after.model_copy(update={"emails_processed": processed, "batches": batches})
        self.checkpoint(cursor_after, history_id=batch.history_id_after)
        checkpoint_seconds = time.perf_counter() - started
        with self._lock:
            self._parked.pop(batch.key, None)
        self.percent = percent
        self.last_batch_seconds = batch.wall_seconds + checkpoint_seconds
        summary.emails_processed, summary.batches = processed, batches
        summary.emails_fetched += batch.emails_fetched
        summary.emails_stored += batch.emails_stored
        summary.emails_enriched += batch.emails_enriched
        summary.emails_skipped += batch.already_enriched
        summary.parse_errors += batch.parse_errors
        summary.labels_updated += batch.labels_updated
        summary.emails_removed += batch.emails_removed
        summary.current_window = batch.window or summary.current_window
        summary.add_tags(batch.tag_counts)
        timings = summary.timings
        timings.fetch_seconds += batch.fetch_seconds
        timings.parse_seconds += batch.parse_seconds
        timings.enrich_seconds += batch.enrich_seconds
        timings.store_seconds += batch.store_seconds + checkpoint_seconds
