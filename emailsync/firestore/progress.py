"""The one writer of `syncProgress/{syncId}`: the live progress the web app subscribes to.

Nothing else writes these documents. The writer enforces the lifecycle of `progress_lifecycle.py`
(pending → in_progress → completed | failed; pending → skipped for a duplicate trigger; a retried
flow run reopens its failed document), keeps `progress` monotone (0..100, 100 when completed), stamps
`expireAt` for Firestore's TTL policy, and coalesces in-progress updates to at most one write per
`min_interval_seconds` per document (Firestore sustains about one write per second per document, and
the frontend cannot show more). A coalesced update is never lost: a timer writes the latest value at
`last_write + min_interval`. State transitions (start, complete, fail, skip) are written at once,
folding in any update still waiting.

Every write re-reads the stored status and is conditioned on it being unchanged (compare-and-set), so a
sync that another process already finished (or failed) stays finished, unless a retry of its own flow
run reopens it (`create_pending(..., reopen=True)`).

Beside it, each with one job: `progress_lifecycle.py` (the rules and `expireAt`), `progress_documents.py`
(what is written, shaped), `progress_coalescing.py` (per-document state between writes) and
`progress_stale.py` (finding pending documents whose run never started).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

from google.cloud import firestore

from emailsync.config import get_settings
from emailsync.errors import FatalError
from emailsync.firestore.client import get_firestore_client
from emailsync.firestore.documents import compare_and_set
from emailsync.firestore.progress_coalescing import DocumentState, DocumentStates
from emailsync.firestore.progress_documents import (
    details_fields,
    error_text,
    pending_document,
    reopened_fields,
    skip_details,
    start_details,
)
from emailsync.firestore.progress_lifecycle import (
    REOPENABLE,
    IllegalTransitionError,
    SyncProgressNotFoundError,
    check_transition,
    clamp_progress,
    expire_at,
    stored_status,
)
from emailsync.firestore.progress_stale import stale_pending_ids, start_timeout_reason
from emailsync.models import SyncMode, SyncProgress, SyncStatus, SyncTrigger

# The errors a write raises are part of the writer's API.
__all__ = ["IllegalTransitionError", "ProgressWriter", "SyncProgressNotFoundError", "get_progress_writer"]

logger = logging.getLogger(__name__)

COLLECTION = SyncProgress.COLLECTION
# A coalesced update whose write keeps failing (Firestore unreachable) is retried this many times.
MAX_DEFERRED_WRITE_ATTEMPTS = 5


class ProgressWriter:
    """Writes `syncProgress` documents; thread-safe; one instance per process (`get_progress_writer()`)."""

    def __init__(self, client: firestore.Client | None = None, min_interval_seconds: float = 1.0) -> None:
        self._client = client
        self.min_interval_seconds = min_interval_seconds
        self._states = DocumentStates()

    # ----------------------------------------------------------------------------- plumbing

    @property
    def client(self) -> firestore.Client:
        # Resolved per call so the process-wide writer follows the environment (emulator, project).
        return self._client or get_firestore_client()

    def _document(self, sync_id: str) -> firestore.DocumentReference:
        return self.client.collection(COLLECTION).document(sync_id)

    def _write_transition(
        self,
        sync_id: str,
        target: SyncStatus,
        fields: Callable[[SyncStatus, int], dict[str, Any]],
        *,
        unchanged_since: datetime | None = None,
    ) -> None:
        """Check the move from the stored status to `target` and write `fields(...)`, atomically
        (with `unchanged_since`: only if the document was not written after it).

        A compare-and-set, not a transaction: a worker killed inside a transaction would leave a lock
        on the document that blocks the next writer (the emulator keeps such locks).
        """

        def decide(snapshot: firestore.DocumentSnapshot) -> dict[str, Any]:
            if not snapshot.exists:
                raise SyncProgressNotFoundError.for_sync(sync_id)
            data = snapshot.to_dict() or {}
            current = stored_status(data)
            check_transition(sync_id, current, target)
            updated = data.get("updatedAt")
            if unchanged_since is not None and isinstance(updated, datetime) and updated > unchanged_since:
                raise IllegalTransitionError(sync_id, current, target)
            update = fields(current, int(data.get("progress") or 0))
            update["status"] = target.value
            update["updatedAt"] = firestore.SERVER_TIMESTAMP
            if target is not current:
                update["expireAt"] = expire_at(target, datetime.now(UTC))
            return update

        compare_and_set(self.client, self._document(sync_id), decide)

    def _write_tracked(
        self,
        sync_id: str,
        state: DocumentState,
        target: SyncStatus,
        fields: Callable[[SyncStatus, int], dict[str, Any]],
        pending: tuple[int | None, dict[str, Any]],
    ) -> None:
        """`_write_transition`, keeping `state` in step (caller holds `state.lock`): on an illegal move
        it learns the stored status; on any other error the taken `pending` update waits again."""
        try:
            self._write_transition(sync_id, target, fields)
        except IllegalTransitionError as exc:
            state.status = exc.current
            raise
        except BaseException:
            state.restore_pending(*pending)
            raise
        state.status = target
        state.last_write = time.monotonic()

    def _write_in_progress(self, sync_id: str, state: DocumentState) -> None:
        """Write the waiting update now (caller holds `state.lock`); the update stays waiting on error."""
        progress, details = state.take_pending()

        def fields(_current: SyncStatus, stored_progress: int) -> dict[str, Any]:
            return {"progress": max(stored_progress, progress or 0), **details}

        self._write_tracked(sync_id, state, SyncStatus.IN_PROGRESS, fields, (progress, details))
        state.failed_attempts = 0

    def _schedule(self, sync_id: str, state: DocumentState, delay: float) -> None:
        def on_timer(generation: int) -> None:
            self._on_timer(sync_id, state, generation)

        state.schedule(delay, on_timer, name=f"progress-flush-{sync_id}")

    def _on_timer(self, sync_id: str, state: DocumentState, generation: int) -> None:
        with state.lock:
            if state.timer_generation != generation:  # cancelled, or replaced by a newer timer
                return
            state.timer = None
            if not state.has_pending:
                return
            try:
                self._write_in_progress(sync_id, state)
            except FatalError as exc:  # finished elsewhere, or deleted: nothing left to show
                state.take_pending()
                logger.warning("dropped a progress update of sync %s: %s", sync_id, exc)
            except Exception as exc:
                state.failed_attempts += 1
                if state.failed_attempts >= MAX_DEFERRED_WRITE_ATTEMPTS:
                    state.take_pending()
                    logger.error("gave up writing progress of sync %s: %s", sync_id, exc)
                else:
                    logger.warning("progress write of sync %s failed (%s); retrying", sync_id, exc)
                    self._schedule(sync_id, state, self.min_interval_seconds)

    def _load_status(self, sync_id: str) -> SyncStatus:
        snapshot = self._document(sync_id).get()
        if not snapshot.exists:
            raise SyncProgressNotFoundError.for_sync(sync_id)
        return stored_status(snapshot.to_dict())

    # ----------------------------------------------------------------------------- public API

    def create_pending(
        self,
        sync_id: str,
        app_user_id: str,
        family_id: str | None,
        provider_user_id: str,
        trigger: SyncTrigger | str = SyncTrigger.MANUAL,
        *,
        reopen: bool = False,
    ) -> SyncProgress:
        """Create the `pending` document of a new sync; for an existing pending one, return it as is.

        `reopen`: a retry of the flow run that owns this sync id (e.g. "Retry" in the Prefect UI) brings
        its failed document, or the in_progress one a crashed run left, back to pending: same document,
        progress kept (it never decreases), `error` moved to `details.previousError`, `details.attempt`
        counting the runs. Without `reopen` (and for completed or skipped documents) a reused id raises
        `IllegalTransitionError`.
        """
        document = self._document(sync_id)
        initial, data = pending_document(
            sync_id, app_user_id, family_id, provider_user_id, trigger, datetime.now(UTC)
        )

        def decide(snapshot: firestore.DocumentSnapshot) -> dict[str, Any] | None:
            if not snapshot.exists:
                return data
            stored = snapshot.to_dict() or {}
            current = stored_status(stored)
            if current is SyncStatus.PENDING:
                # Its run is starting: touched, so the stale-pending sweep (which only fails documents
                # untouched for its timeout) cannot fail it between here and `start`.
                return {"updatedAt": firestore.SERVER_TIMESTAMP} if reopen else None
            if not (reopen and current in REOPENABLE):
                raise IllegalTransitionError(sync_id, current, SyncStatus.PENDING)
            return reopened_fields(stored, current, datetime.now(UTC))

        state = self._states.get(sync_id)
        with state.lock:
            created = compare_and_set(self.client, document, decide)
            if created:
                state.last_write = time.monotonic()
            state.status = SyncStatus.PENDING
        stored = self.get(sync_id)
        if stored is None:  # deleted between the write and the read: report what was written
            return initial
        return stored

    def start(
        self,
        sync_id: str,
        mode: SyncMode | str,
        flow_run_id: str | None = None,
        total_estimate: int | None = None,
    ) -> None:
        """pending → in_progress (or in_progress again when an interrupted sync resumes)."""
        state = self._states.get(sync_id)
        with state.lock:
            state.cancel_timer()
            state.pending_details.update(start_details(mode, flow_run_id, total_estimate))
            self._write_in_progress(sync_id, state)

    def update(self, sync_id: str, progress: float, **details: Any) -> None:
        """Report progress (0..100, never lower than before) and merge `details` into the map.

        Written at once when the document was not written for `min_interval_seconds`, otherwise
        folded into one write at `last_write + min_interval_seconds`.
        """
        state = self._states.get(sync_id)
        with state.lock:
            current = state.status or self._load_status(sync_id)
            state.status = current
            check_transition(sync_id, current, SyncStatus.IN_PROGRESS)
            state.pending_progress = max(clamp_progress(progress), state.pending_progress or 0)
            state.pending_details.update(details_fields(details))
            if state.timer is not None:
                return  # the scheduled write will carry this value
            wait = state.last_write + self.min_interval_seconds - time.monotonic()
            if wait > 0:
                self._schedule(sync_id, state, wait)
                return
            try:
                self._write_in_progress(sync_id, state)
            except FatalError:
                raise
            except Exception as exc:  # transient: progress must not fail the sync, the timer retries
                logger.warning("progress write of sync %s failed (%s); retrying", sync_id, exc)
                self._schedule(sync_id, state, self.min_interval_seconds)

    def complete(self, sync_id: str, **details: Any) -> None:
        """→ completed with progress 100, written at once (after any update still waiting)."""
        self._finish(sync_id, SyncStatus.COMPLETED, None, details)

    def fail(self, sync_id: str, error: str | BaseException, **details: Any) -> None:
        """→ failed with a human-readable `error`, written at once; progress stays where it got to."""
        self._finish(sync_id, SyncStatus.FAILED, error_text(error), details)

    def skip(self, sync_id: str, active_sync_id: str | None, reason: str, **details: Any) -> None:
        """pending → skipped: this trigger found `active_sync_id` syncing the mailbox ("already syncing").

        Progress stays 0 and the status is its own, so neither the page nor any other reader takes the
        trigger for a finished sync; `details.skipped`, `skipReason` and `activeSyncId` say why.
        """
        self._finish(sync_id, SyncStatus.SKIPPED, None, skip_details(active_sync_id, reason, details))

    def fail_stale_pending(self, older_than_seconds: float | None = None) -> list[str]:
        """Fail every `pending` document whose run has not started within `older_than_seconds` (default:
        `Settings.pending_start_timeout_seconds`), saying so; returns their sync ids.

        Pending since `updatedAt` (a reopened document restarts the clock). If the run starts after all,
        it reopens the document (`create_pending(..., reopen=True)`), so nothing is lost.
        """
        timeout = older_than_seconds
        if timeout is None:
            timeout = get_settings().pending_start_timeout_seconds
        cutoff = datetime.now(UTC) - timedelta(seconds=timeout)
        failed: list[str] = []
        for sync_id in stale_pending_ids(self.client, cutoff):
            try:
                self._finish_if_pending(sync_id, start_timeout_reason(timeout), cutoff)
            except IllegalTransitionError:
                continue  # it started (or finished) meanwhile
            failed.append(sync_id)
            logger.warning("sync %s was still pending after %.0f s: marked failed", sync_id, timeout)
        return failed

    def _finish_if_pending(self, sync_id: str, reason: str, cutoff: datetime) -> None:
        """pending → failed, only if still pending and not touched since `cutoff` (compare-and-set)."""

        def fields(current: SyncStatus, stored_progress: int) -> dict[str, Any]:
            if current is not SyncStatus.PENDING:
                raise IllegalTransitionError(sync_id, current, SyncStatus.FAILED)
            return {"progress": stored_progress, "error": reason, **details_fields({"startTimedOut": True})}

        state = self._states.get(sync_id)
        with state.lock:
            self._write_transition(sync_id, SyncStatus.FAILED, fields, unchanged_since=cutoff)
            state.status = SyncStatus.FAILED
        self._states.forget(sync_id, state)

    def _finish(
        self, sync_id: str, target: SyncStatus, error: str | None, details: Mapping[str, Any]
    ) -> None:
        state = self._states.get(sync_id)
        with state.lock:
            state.cancel_timer()
            pending_progress, pending_details = state.take_pending()
            all_details = {**pending_details, **details_fields(details)}

            def fields(_current: SyncStatus, stored_progress: int) -> dict[str, Any]:
                if target is SyncStatus.COMPLETED:
                    progress = 100
                else:
                    progress = max(stored_progress, pending_progress or 0)
                return {"progress": progress, "error": error, **all_details}

            self._write_tracked(sync_id, state, target, fields, (pending_progress, pending_details))
        self._states.forget(sync_id, state)

    def flush(self, sync_id: str | None = None) -> None:
        """Write waiting updates now (one sync, or all); e.g. before a worker shuts down."""
        first_error: Exception | None = None
        for target_id, state in self._states.tracked(sync_id):
            with state.lock:
                state.cancel_timer()
                if not state.has_pending:
                    continue
                try:
                    self._write_in_progress(target_id, state)
                except Exception as exc:
                    first_error = first_error or exc
        if first_error is not None:
            raise first_error

    def get(self, sync_id: str) -> SyncProgress | None:
        """The stored document (updates still waiting to be written are not included)."""
        snapshot = self._document(sync_id).get()
        return SyncProgress.from_firestore(snapshot.to_dict() or {}) if snapshot.exists else None


@lru_cache(maxsize=1)
def get_progress_writer() -> ProgressWriter:
    """The process-wide writer: one coalescing state per document across every task of the process."""
    return ProgressWriter()
