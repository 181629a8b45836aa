"""Keeping a sync's lease alive, and telling a dead holder from a live one.

`LeaseHeartbeat` renews the lease of a live sync on its own thread every few seconds, whatever the
batches do, so a lease only expires when its holder stopped (killed, hung, or its machine gone). Beside
the Firestore lease it keeps whatever else must live exactly as long as the sync (the Prefect slot's
lease, registered by the orchestration with `also`).

`holder_identity()` names this process so that a sync on the same machine can see at once that the
holder of a lease is gone (`holder_is_gone`): the kernel's boot id and pid namespace say "same machine,
same process table"; the pid and its start time say "that very process". Anywhere else (another
machine, container or OS) nothing is concluded and the lease is left to expire.
"""

from __future__ import annotations

import contextvars
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def _process_start_time(pid: int) -> str | None:
    """The start time of `pid` in clock ticks since boot (field 22 of /proc/PID/stat), None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may contain spaces: split after its last ')'.
    fields = stat[stat.rfind(")") + 2 :].split()
    return fields[19] if len(fields) > 19 else None


def _machine() -> str | None:
    """This process table's identity: boot id + pid namespace (None where /proc does not tell)."""
    try:
        return f"{_BOOT_ID.read_text().strip()}:{os.readlink('/proc/self/ns/pid')}"
    except OSError:
        return None


def holder_identity(pid: int | None = None) -> str | None:
    """`machine/pid/start-time` of this process (or `pid`), stored with the lease it holds."""
    pid = pid or os.getpid()
    machine, started = _machine(), _process_start_time(pid)
    if machine is None or started is None:
        return None
    return f"{machine}/{pid}/{started}"


def holder_is_gone(identity: str | None) -> bool:
    """True only when `identity` is a process of this very process table that no longer runs."""
    if not identity:
        return False
    try:
        machine, pid_text, started = identity.rsplit("/", 2)
        pid = int(pid_text)
    except ValueError:
        return False
    if machine != _machine():
        return False
    return _process_start_time(pid) != started


class LeaseHeartbeat:
    """Calls `renew` every `interval` seconds on a daemon thread until `stop()` or until `renew` says
    the lease is no longer ours (then `lost` is set). `also(beat)` adds a call made on every beat."""

    def __init__(
        self,
        renew: Callable[[], bool],
        interval: float,
        *,
        name: str = "lease-heartbeat",
        log: logging.Logger | logging.LoggerAdapter[Any] | None = None,
    ) -> None:
        self._renew = renew
        self.interval = interval
        self._name = name
        self._log = log or logger
        self._beats: list[Callable[[], object]] = []
        self._stop = threading.Event()
        self.lost = threading.Event()
        self._thread: threading.Thread | None = None

    def also(self, beat: Callable[[], object]) -> None:
        """Keep something else alive with the lease (called on the heartbeat thread, errors logged)."""
        self._beats.append(beat)

    def start(self) -> LeaseHeartbeat:
        if self._thread is None:
            # In the starter's context (its context variables: an orchestrator's run and settings),
            # which the calls added with `also` may need.
            context = contextvars.copy_context()
            self._thread = threading.Thread(
                target=context.run, args=(self._run,), name=self._name, daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=self.interval + 5)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                if not self._renew():
                    self._log.warning("%s: the lease is no longer ours; renewal stopped", self._name)
                    self.lost.set()
                    return
            except Exception as exc:  # a transient Firestore error: the next beat tries again
                self._log.warning("%s: lease renewal failed (%s); retrying", self._name, exc)
            for beat in list(self._beats):
                try:
                    beat()
                except Exception as exc:
                    self._log.warning("%s: %s", self._name, exc)
