"""The one writer of `syncProgress/{syncId}`: the live progress the web app subscribes to.

Nothing else writes these documents. The writer enforces the lifecycle

    pending ──> in_progress ──> completed
       │            │  ↺ (updates, resumed syncs)
       └────────────┴─────> failed            (completed and failed are terminal)

keeps `progress` monotone (0..100, 100 when completed) and coalesces in-progress updates to at most
one write per `min_interval_seconds` per document (Firestore sustains about one write per second per
document, and the frontend cannot show more). A coalesced update is never lost: a timer writes the
latest value at `last_write + min_interval`. State transitions (start, complete, fail) are written at
once, folding in any update still waiting.

Every write re-reads the stored status and is conditioned on it being unchanged (compare-and-set), so a
sync that another process already finished (or failed) stays finished. A retry of a failed sync gets a
new syncId.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from functools import lru_cache
from typing import Any

from google.cloud import firestore
from google.cloud.firestore_v1.field_path import FieldPath
from pydantic import BaseModel
from pydantic.alias_generators import to_camel

from emailsync.errors import FatalError
from emailsync.firestore.client import get_firestore_client
from emailsync.firestore.repositories import compare_and_set
from emailsync.models import (
    FirestoreModel,
    SyncDetails,
    SyncMode,
    SyncProgress,
    SyncStatus,
    SyncTrigger,
)

logger = logging.getLogger(__name__)

COLLECTION = SyncProgress.COLLECTION
MAX_ERROR_CHARS = 4000
# A coalesced update whose write keeps failing (Firestore unreachable) is retried this many times.
MAX_DEFERRED_WRITE_ATTEMPTS = 5

LEGAL_TRANSITIONS: dict[SyncStatus, frozenset[SyncStatus]] = {
    SyncStatus.PENDING: frozenset({SyncStatus.IN_PROGRESS, SyncStatus.COMPLETED, SyncStatus.FAILED}),
    SyncStatus.IN_PROGRESS: frozenset({SyncStatus.IN_PROGRESS, SyncStatus.COMPLETED, SyncStatus.FAILED}),
    SyncStatus.COMPLETED: frozenset(),
    SyncStatus.FAILED: frozenset(),
}


class IllegalTransitionError(FatalError):
    """A progress write that the lifecycle forbids, e.g. updating a completed sync."""

    def __init__(self, sync_id: str, current: SyncStatus, target: SyncStatus) -> None:
        super().__init__(f"sync {sync_id} is {current.value}; cannot move to {target.value}")
        self.sync_id = sync_id
        self.current = current
        self.target = target


class SyncProgressNotFoundError(FatalError):
    """A progress write for a sync whose document was never created (`create_pending` first)."""

    @classmethod
    def for_sync(cls, sync_id: str) -> SyncProgressNotFoundError:
        return cls(f"sync {sync_id} has no progress document; create_pending() comes first")


def check_transition(sync_id: str, current: SyncStatus, target: SyncStatus) -> None:
    if target not in LEGAL_TRANSITIONS[current]:
        raise IllegalTransitionError(sync_id, current, target)


def _stored_status(data: Mapping[str, Any] | None) -> SyncStatus:
    return SyncStatus((data or {}).get("status", SyncStatus.PENDING.value))


def clamp_progress(value: float) -> int:
    return max(0, min(100, int(value)))


def _stored_value(value: Any) -> Any:
    """A details value as Firestore stores it (models by their camelCase names, enums by value)."""
    if isinstance(value, FirestoreModel):
        return value.to_firestore()
    if isinstance(value, BaseModel):
        return value.model_dump(mode="python")
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Mapping):
        return {str(key): _stored_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_stored_value(item) for item in value]
    return value


def _details_fields(details: Mapping[str, Any]) -> dict[str, Any]:
    """`details` keys (snake_case or camelCase) as field paths into the stored map, so they merge."""
    return {FieldPath("details", to_camel(key)).to_api_repr(): _stored_value(v) for key, v in details.items()}


@dataclass
class _DocumentState:
    """What this process knows about one progress document, guarded by `lock`."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    status: SyncStatus | None = None  # last status this process stored or read
    last_write: float = float("-inf")  # time.monotonic() of the last write
    pending_progress: int | None = None
    pending_details: dict[str, Any] = field(default_factory=dict)  # camelCase field paths → values
    timer: threading.Timer | None = None
    timer_generation: int = 0
    failed_attempts: int = 0

    @property
    def has_pending(self) -> bool:
        return self.pending_progress is not None or bool(self.pending_details)

    def take_pending(self) -> tuple[int | None, dict[str, Any]]:
        pending = (self.pending_progress, self.pending_details)
        self.pending_progress, self.pending_details = None, {}
        return pending

    def restore_pending(self, progress: int | None, details: dict[str, Any]) -> None:
        if progress is not None:
            self.pending_progress = max(progress, self.pending_progress or 0)
        self.pending_details = {**details, **self.pending_details}

    def cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.timer_generation += 1


class ProgressWriter:
    """Writes `syncProgress` documents; thread-safe; one instance per process (`get_progress_writer()`)."""

    def __init__(self, client: firestore.Client | None = None, min_interval_seconds: float = 1.0) -> None:
        self._client = client
        self.min_interval_seconds = min_interval_seconds
        self._states: dict[str, _DocumentState] = {}
        self._states_lock = threading.Lock()

    # ----------------------------------------------------------------------------- plumbing

    @property
    def client(self) -> firestore.Client:
        # Resolved per call so the process-wide writer follows the environment (emulator, project).
        return self._client or get_firestore_client()

    def _document(self, sync_id: str) -> firestore.DocumentReference:
        return self.client.collection(COLLECTION).document(sync_id)

    def _state(self, sync_id: str) -> _DocumentState:
        with self._states_lock:
            return self._states.setdefault(sync_id, _DocumentState())

    def _forget(self, sync_id: str, state: _DocumentState) -> None:
        with self._states_lock:
            if self._states.get(sync_id) is state:
                del self._states[sync_id]

    def _write_transition(
        self, sync_id: str, target: SyncStatus, fields: Callable[[SyncStatus, int], dict[str, Any]]
    ) -> None:
        """Check the move from the stored status to `target` and write `fields(...)`, atomically.

        A compare-and-set, not a transaction: a worker killed inside a transaction would leave a lock
        on the document that blocks the next writer (the emulator keeps such locks).
        """

        def decide(snapshot: firestore.DocumentSnapshot) -> dict[str, Any]:
            if not snapshot.exists:
                raise SyncProgressNotFoundError.for_sync(sync_id)
            data = snapshot.to_dict() or {}
            current = _stored_status(data)
            check_transition(sync_id, current, target)
            update = fields(current, int(data.get("progress") or 0))
            update["status"] = target.value
            update["updatedAt"] = firestore.SERVER_TIMESTAMP
            return update

        compare_and_set(self.client, self._document(sync_id), decide)

    def _write_tracked(
        self,
        sync_id: str,
        state: _DocumentState,
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

    def _write_in_progress(self, sync_id: str, state: _DocumentState) -> None:
        """Write the waiting update now (caller holds `state.lock`); the update stays waiting on error."""
        progress, details = state.take_pending()

        def fields(_current: SyncStatus, stored_progress: int) -> dict[str, Any]:
            return {"progress": max(stored_progress, progress or 0), **details}

        self._write_tracked(sync_id, state, SyncStatus.IN_PROGRESS, fields, (progress, details))
        state.failed_attempts = 0

    def _schedule(self, sync_id: str, state: _DocumentState, delay: float) -> None:
        state.cancel_timer()
        generation = state.timer_generation
        timer = threading.Timer(max(0.0, delay), self._on_timer, args=(sync_id, state, generation))
        timer.name = f"progress-flush-{sync_id}"
        timer.daemon = True
        state.timer = timer
        timer.start()

    def _on_timer(self, sync_id: str, state: _DocumentState, generation: int) -> None:
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
        return _stored_status(snapshot.to_dict())

    # ----------------------------------------------------------------------------- public API

    def create_pending(
        self,
        sync_id: str,
        app_user_id: str,
        family_id: str | None,
        provider_user_id: str,
        trigger: SyncTrigger | str = SyncTrigger.MANUAL,
    ) -> SyncProgress:
        """Create the `pending` document of a new sync; for an existing pending one, return it as is."""
        document = self._document(sync_id)
        now = datetime.now(UTC)
        initial = SyncProgress(
            syncId=sync_id,
            appUserId=app_user_id,
            familyId=family_id,
            providerUserId=provider_user_id,
            status=SyncStatus.PENDING,
            progress=0,
            startedAt=now,
            updatedAt=now,
            details=SyncDetails(trigger=SyncTrigger(trigger)),
        )
        data = {**initial.to_firestore(), "startedAt": firestore.SERVER_TIMESTAMP}
        data["updatedAt"] = firestore.SERVER_TIMESTAMP

        def decide(snapshot: firestore.DocumentSnapshot) -> dict[str, Any] | None:
            if snapshot.exists:
                current = _stored_status(snapshot.to_dict())
                if current is not SyncStatus.PENDING:
                    raise IllegalTransitionError(sync_id, current, SyncStatus.PENDING)
                return None
            return data

        state = self._state(sync_id)
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
        details: dict[str, Any] = {"mode": SyncMode(mode)}
        if flow_run_id is not None:
            details["flowRunId"] = flow_run_id
        if total_estimate is not None:
            details["emailsTotalEstimate"] = total_estimate
        state = self._state(sync_id)
        with state.lock:
            state.cancel_timer()
            state.pending_details.update(_details_fields(details))
            self._write_in_progress(sync_id, state)

    def update(self, sync_id: str, progress: float, **details: Any) -> None:
        """Report progress (0..100, never lower than before) and merge `details` into the map.

        Written at once when the document was not written for `min_interval_seconds`, otherwise
        folded into one write at `last_write + min_interval_seconds`.
        """
        state = self._state(sync_id)
        with state.lock:
            current = state.status or self._load_status(sync_id)
            state.status = current
            check_transition(sync_id, current, SyncStatus.IN_PROGRESS)
            state.pending_progress = max(clamp_progress(progress), state.pending_progress or 0)
            state.pending_details.update(_details_fields(details))
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
        if isinstance(error, BaseException):
            text = str(error).strip() or type(error).__name__
        else:
            text = error.strip() or "unknown error"
        self._finish(sync_id, SyncStatus.FAILED, text[:MAX_ERROR_CHARS], details)

    def _finish(
        self, sync_id: str, target: SyncStatus, error: str | None, details: Mapping[str, Any]
    ) -> None:
        state = self._state(sync_id)
        with state.lock:
            state.cancel_timer()
            pending_progress, pending_details = state.take_pending()
            all_details = {**pending_details, **_details_fields(details)}

            def fields(_current: SyncStatus, stored_progress: int) -> dict[str, Any]:
                if target is SyncStatus.COMPLETED:
                    progress = 100
                else:
                    progress = max(stored_progress, pending_progress or 0)
                return {"progress": progress, "error": error, **all_details}

            self._write_tracked(sync_id, state, target, fields, (pending_progress, pending_details))
        self._forget(sync_id, state)

    def flush(self, sync_id: str | None = None) -> None:
        """Write waiting updates now (one sync, or all); e.g. before a worker shuts down."""
        with self._states_lock:
            if sync_id is None:
                targets = list(self._states.items())
            else:
                targets = [(sync_id, self._states[sync_id])] if sync_id in self._states else []
        first_error: Exception | None = None
        for target_id, state in targets:
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
