"""Watcher latency: Gmail connect -> `pending` progress doc, and connect -> flow running.

Local stack as in the demo (Firestore emulator, local Gmail server, the real flow in-process on the
watcher's pool). One warm-up connect starts Prefect's temporary API and loads the embedding model;
then CONNECTS users connect one after another. Times are what a Firestore listener (the web app)
sees: first snapshot showing the doc `pending`, first showing it `in_progress`. Goals: ≤ 1 s, ≤ 3 s.
"""

from __future__ import annotations

import contextlib
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from google.cloud import firestore

from emailsync.firestore.client import get_firestore_client, temporary_environment
from emailsync.local.firestore_emulator import FirestoreEmulator
from emailsync.local.gmail_server.server import GmailApiServer
from emailsync.local.mailbox import Mailbox, read_mbox
from emailsync.models import SyncProgress

REPO_ROOT = Path(__file__).resolve().parent.parent
SAMPLE_MBOX = REPO_ROOT / "samples" / "sample.mbox"
BENCH_PROJECT = "omnibutler-bench"
CONNECTS = 5
MAILBOX_SIZE = 5
GOAL_PENDING_SECONDS = 1.0
GOAL_RUNNING_SECONDS = 3.0


def sample_raws() -> list[bytes]:
    return read_mbox(SAMPLE_MBOX)


@contextlib.contextmanager
def local_stack(
    extra_env: dict[str, str] | None = None,
) -> Iterator[tuple[FirestoreEmulator, GmailApiServer]]:
    """Emulator + Gmail server (unlimited quota: we time orchestration, not Gmail), env pointing at them."""
    emulator = FirestoreEmulator().start()
    server = GmailApiServer(Mailbox.from_raw_messages(sample_raws()[:10]), quota_units_per_second=0).start()
    env = {**emulator.environ(BENCH_PROJECT), "GMAIL_API_ENDPOINT": server.url, **(extra_env or {})}
    try:
        with temporary_environment(env):
            yield emulator, server
    finally:
        server.stop()
        emulator.stop()


class StatusClock:
    """Wall-clock time at which a listener first saw each provider user's progress doc in each status."""

    def __init__(self, client: firestore.Client) -> None:
        self.first_seen: dict[tuple[str, str], float] = {}
        self.changed = threading.Condition()
        self._watch = client.collection(SyncProgress.COLLECTION).on_snapshot(self._on_snapshot)

    def _on_snapshot(self, docs: list[Any], changes: list[Any], read_time: Any) -> None:
        now = time.perf_counter()
        with self.changed:
            for change in changes:
                data = change.document.to_dict() or {}
                key = (str(data.get("providerUserId")), str(data.get("status")))
                self.first_seen.setdefault(key, now)
            self.changed.notify_all()

    def wait_for(self, provider_user_id: str, status: str, timeout: float = 120.0) -> float:
        deadline = time.monotonic() + timeout
        with self.changed:
            while (provider_user_id, status) not in self.first_seen:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{provider_user_id} never reached {status}")
                self.changed.wait(0.2)
            return self.first_seen[(provider_user_id, status)]

    def close(self) -> None:
        self._watch.unsubscribe()


def run() -> dict[str, Any]:
    from deployments.watcher import GmailConnectWatcher, InProcessLauncher
    from emailsync.local.seed import connect_gmail, seed_account

    raws = sample_raws()
    with local_stack() as (_emulator, server):
        client = get_firestore_client()
        users = [f"pu-bench-{n}" for n in range(CONNECTS + 1)]  # the first one warms up
        for n, user in enumerate(users):
            token = f"token-{user}"
            server.add_mailbox(
                token, Mailbox.from_raw_messages(raws[n * MAILBOX_SIZE : (n + 1) * MAILBOX_SIZE])
            )
            seed_account(client, provider_user_id=user, family_id=f"family-{n}", token=token)
        clock = StatusClock(client)
        watcher = GmailConnectWatcher(client, launcher=InProcessLauncher(max_workers=2)).start()
        pending: list[float] = []
        running: list[float] = []
        warmup_seconds = 0.0
        try:
            for n, user in enumerate(users):
                connected = time.perf_counter()
                connect_gmail(client, user)
                seen_pending = clock.wait_for(user, "pending")
                seen_running = clock.wait_for(user, "in_progress")
                clock.wait_for(user, "completed")
                if n == 0:
                    warmup_seconds = seen_running - connected
                    continue
                pending.append(seen_pending - connected)
                running.append(seen_running - connected)
        finally:
            watcher.stop(wait=True)
            clock.close()
    median_pending = statistics.median(pending)
    median_running = statistics.median(running)
    return {
        "connects": CONNECTS,
        "mailbox_messages_per_user": MAILBOX_SIZE,
        "prefect_api": "temporary local (no PREFECT_API_URL)",
        "warmup_connect_to_running_seconds": round(warmup_seconds, 2),
        "connect_to_pending_seconds": [round(v, 3) for v in pending],
        "connect_to_running_seconds": [round(v, 3) for v in running],
        "median_connect_to_pending_seconds": round(median_pending, 3),
        "median_connect_to_running_seconds": round(median_running, 3),
        "goal_pending_seconds": GOAL_PENDING_SECONDS,
        "goal_running_seconds": GOAL_RUNNING_SECONDS,
        "pending_within_goal": median_pending <= GOAL_PENDING_SECONDS,
        "running_within_goal": median_running <= GOAL_RUNNING_SECONDS,
    }
