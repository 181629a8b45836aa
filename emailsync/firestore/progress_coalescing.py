"""What the progress writer (`progress.py`) keeps per document between writes, so it coalesces updates:
the status it last stored, when it last wrote, the update still waiting, and the timer that writes it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from emailsync.models import SyncStatus


@dataclass
class DocumentState:
    """What a `ProgressWriter` knows about one progress document, guarded by `lock`."""

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

    def schedule(self, delay: float, on_timer: Callable[[int], None], name: str) -> None:
        """Call `on_timer(generation)` after `delay` seconds, replacing any timer still waiting; a
        callback whose generation is no longer current was cancelled and must do nothing."""
        self.cancel_timer()
        timer = threading.Timer(max(0.0, delay), on_timer, args=(self.timer_generation,))
        timer.name = name
        timer.daemon = True
        self.timer = timer
        timer.start()


class DocumentStates:
    """The `DocumentState` of every document a writer is tracking, by sync id (thread-safe)."""

    def __init__(self) -> None:
        self._states: dict[str, DocumentState] = {}
        self._lock = threading.Lock()

    def get(self, sync_id: str) -> DocumentState:
        with self._lock:
            return self._states.setdefault(sync_id, DocumentState())

    def forget(self, sync_id: str, state: DocumentState) -> None:
        """Stop tracking a finished document (unless a newer state took its place)."""
        with self._lock:
            if self._states.get(sync_id) is state:
                del self._states[sync_id]

    def tracked(self, sync_id: str | None = None) -> list[tuple[str, DocumentState]]:
        """One tracked document (none if it is not tracked), or all of them."""
        with self._lock:
            if sync_id is None:
                return list(self._states.items())
            return [(sync_id, self._states[sync_id])] if sync_id in self._states else []
