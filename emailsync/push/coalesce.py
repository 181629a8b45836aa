"""Per-user coalescing of push-triggered syncs: one running plus at most one queued.

A notification for a user with no sync of ours running starts one; any number of notifications that
arrive while it runs collapse into a single follow-up run, which starts when the running one ends (so
a change that landed after the running sync read its history is still picked up). When another sync of
the user holds the lease (a backfill, the sweep's run), the run answers BUSY and is tried again after
`busy_retry_seconds` instead of being dropped.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum

logger = logging.getLogger("emailsync.push")


class RunOutcome(StrEnum):
    DONE = "done"  # the sync ran (completed or failed: a failure is the sweep's to retry)
    BUSY = "busy"  # another sync of the user holds the lease: try again shortly
    IGNORED = "ignored"  # the user is not (or no longer) connected


@dataclass
class _UserSlot:
    running: bool = False
    queued: bool = False
    runs: int = 0
    notifications: int = 0


class SyncCoalescer:
    """`notify(provider_user_id)` never blocks; `run_sync(provider_user_id)` runs on a bounded pool."""

    def __init__(
        self,
        run_sync: Callable[[str], RunOutcome],
        *,
        max_workers: int = 8,
        busy_retry_seconds: float = 2.0,
    ) -> None:
        self.run_sync = run_sync
        self.busy_retry_seconds = busy_retry_seconds
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="push-sync")
        self._slots: dict[str, _UserSlot] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._idle = threading.Condition(self._lock)

    def notify(self, provider_user_id: str) -> bool:
        """A change of this user's mailbox; True once a sync is running or queued for it."""
        with self._lock:
            if self._stopping.is_set():
                return False
            slot = self._slots.setdefault(provider_user_id, _UserSlot())
            slot.notifications += 1
            if slot.running:
                slot.queued = True
                return True
            slot.running = True
        self._pool.submit(self._drive, provider_user_id)
        return True

    def _drive(self, provider_user_id: str) -> None:
        while not self._stopping.is_set():
            with self._lock:
                slot = self._slots[provider_user_id]
                slot.queued = False
                slot.runs += 1
            try:
                outcome = self.run_sync(provider_user_id)
            except Exception:
                logger.exception("push sync of %s failed", provider_user_id)
                outcome = RunOutcome.DONE
            if outcome == RunOutcome.BUSY:
                with self._lock:
                    slot.runs -= 1  # it did not run: not counted
                    slot.queued = True
                self._stopping.wait(self.busy_retry_seconds)
            with self._lock:
                if not slot.queued or self._stopping.is_set():
                    slot.running = False
                    self._idle.notify_all()
                    return
            logger.info("follow-up sync of %s (notified while its sync ran)", provider_user_id)

    def runs(self, provider_user_id: str) -> int:
        """How many syncs were run for the user (tests, the demo)."""
        with self._lock:
            slot = self._slots.get(provider_user_id)
            return slot.runs if slot else 0

    def notifications(self, provider_user_id: str) -> int:
        with self._lock:
            slot = self._slots.get(provider_user_id)
            return slot.notifications if slot else 0

    def wait_idle(self, timeout: float) -> bool:
        """Block until no sync is running or queued (tests, benchmarks)."""
        with self._lock:
            return self._idle.wait_for(
                lambda: not any(slot.running for slot in self._slots.values()), timeout=timeout
            )

    def shutdown(self, wait: bool = True) -> None:
        self._stopping.set()
        self._pool.shutdown(wait=wait, cancel_futures=not wait)
