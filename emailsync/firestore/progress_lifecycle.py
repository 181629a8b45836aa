"""The rules of a `syncProgress` document, apart from the writer that applies them (`progress.py`):
the legal transitions and their errors, the progress bounds, and how long a document is kept (`expireAt`).

    pending ──> in_progress ──> completed
       │  │         │  ↺ (updates, resumed syncs)
       │  └─────────┴─────> failed ──(reopen: a retried flow run)──> pending
       └──> skipped        (a duplicate trigger: "already syncing", linked to the active sync)

completed, failed and skipped are terminal for ordinary writes; only `reopen` (a retry of the same flow
run, e.g. from the Prefect UI) brings a failed or interrupted document back to pending, with its progress
kept. Every write stamps `expireAt`, the field of the Firestore TTL policy in `firestore.indexes.json`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from emailsync.config import Settings, get_settings
from emailsync.errors import FatalError
from emailsync.models import SyncStatus

LEGAL_TRANSITIONS: dict[SyncStatus, frozenset[SyncStatus]] = {
    SyncStatus.PENDING: frozenset(
        {SyncStatus.IN_PROGRESS, SyncStatus.COMPLETED, SyncStatus.FAILED, SyncStatus.SKIPPED}
    ),
    SyncStatus.IN_PROGRESS: frozenset({SyncStatus.IN_PROGRESS, SyncStatus.COMPLETED, SyncStatus.FAILED}),
    SyncStatus.COMPLETED: frozenset(),
    SyncStatus.FAILED: frozenset(),
    SyncStatus.SKIPPED: frozenset(),
}
# What a retried flow run may reopen: its own failed document, or the in_progress one a crash left behind.
REOPENABLE: frozenset[SyncStatus] = frozenset({SyncStatus.FAILED, SyncStatus.IN_PROGRESS})


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


def stored_status(data: Mapping[str, Any] | None) -> SyncStatus:
    return SyncStatus((data or {}).get("status", SyncStatus.PENDING.value))


def clamp_progress(value: float) -> int:
    return max(0, min(100, int(value)))


def expire_at(status: SyncStatus, now: datetime, settings: Settings | None = None) -> datetime:
    """When Firestore's TTL policy may delete a document in `status`, written `now`.

    Failed documents are kept longest (someone may still be looking into them); a document that never
    finished (pending, in progress) gets the same long bound, so even a lost one disappears eventually.
    """
    settings = settings or get_settings()
    if status in (SyncStatus.COMPLETED, SyncStatus.SKIPPED):
        return now + timedelta(days=settings.progress_retention_days)
    return now + timedelta(days=settings.failed_progress_retention_days)
