"""The Gmail-connect watcher against the real emulator, the local Gmail server and the real flow.

Every user gets a small mailbox of its own (token -> mailbox on the shared Gmail server), so a sync
takes a second or two.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from functools import cache
from typing import Any

import pytest
from google.cloud import firestore

from deployments.watcher import GmailConnectWatcher, InProcessLauncher
from emailsync.config import get_settings
from emailsync.firestore.emails import EmailRepository
from emailsync.firestore.sync_state import SyncStateRepository
from emailsync.local.gmail_server.server import GmailApiServer
from emailsync.local.mailbox import Mailbox, read_mbox
from emailsync.local.seed import connect_gmail, disconnect_gmail, seed_account
from emailsync.models import SyncProgress, SyncStatus, SyncTrigger
from tests.fixtures.firestore import progress_docs
from tests.fixtures.gmail import SAMPLE_MBOX

pytestmark = [pytest.mark.integration, pytest.mark.prefect]

SYNC_TIMEOUT = 150.0  # generous: a cold first import of torch on a busy 2-core machine is slow


@cache
def _sample_raws() -> tuple[bytes, ...]:
    return tuple(read_mbox(SAMPLE_MBOX))


def small_mailbox(size: int, offset: int = 0) -> Mailbox:
    return Mailbox.from_raw_messages(_sample_raws()[offset : offset + size], shift_dates=True)


def wait_until(predicate: Callable[[], Any], timeout: float = SYNC_TIMEOUT, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def completed_syncs(client: firestore.Client, provider_user_id: str, count: int) -> list[SyncProgress]:
    def done() -> list[SyncProgress] | None:
        docs = progress_docs(client, provider_user_id)
        failed = [d for d in docs if d.status == SyncStatus.FAILED]
        assert not failed, f"sync failed: {failed[0].error}"
        finished = [d for d in docs if d.status == SyncStatus.COMPLETED]
        return finished if len(finished) >= count else None

    return wait_until(done, what=f"{count} completed syncs of {provider_user_id}")


class StatusRecorder:
    """Every status each syncProgress document went through, as a Firestore listener saw them."""

    def __init__(self, client: firestore.Client) -> None:
        self.seen: dict[str, list[str]] = {}
        self._lock = threading.Lock()
        self._watch = client.collection(SyncProgress.COLLECTION).on_snapshot(self._on_snapshot)

    def _on_snapshot(self, docs: list[Any], changes: list[Any], read_time: Any) -> None:
        with self._lock:
            for change in changes:
                data = change.document.to_dict() or {}
                statuses = self.seen.setdefault(change.document.id, [])
                if not statuses or statuses[-1] != data.get("status"):
                    statuses.append(data.get("status"))

    def wait_for(self, sync_id: str, status: str, timeout: float = 30.0) -> list[str]:
        """The statuses seen for `sync_id` once `status` arrived (listeners lag behind direct reads)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                statuses = list(self.seen.get(sync_id, []))
            if statuses and statuses[-1] == status:
                return statuses
            time.sleep(0.05)
        return statuses

    def close(self) -> None:
        self._watch.unsubscribe()


@pytest.fixture
def gmail_endpoint(gmail_server: GmailApiServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[GmailApiServer]:
    """The shared Gmail server as this process's GMAIL_API_ENDPOINT, quota raised to keep syncs quick."""
    gmail_server.configure(quota_units_per_second=0)
    monkeypatch.setenv("GMAIL_API_ENDPOINT", gmail_server.url)
    get_settings.cache_clear()
    yield gmail_server
    get_settings.cache_clear()


@pytest.fixture
def connect_env(
    firestore_client: firestore.Client, gmail_endpoint: GmailApiServer, prefect_server: Any
) -> Iterator[Callable[..., GmailConnectWatcher]]:
    """Makes watchers running the real flow in-process; stops them (waiting for their syncs) after."""
    watchers: list[GmailConnectWatcher] = []

    def make(**options: Any) -> GmailConnectWatcher:
        watcher = GmailConnectWatcher(firestore_client, launcher=InProcessLauncher(max_workers=2), **options)
        watchers.append(watcher)
        return watcher

    yield make
    for watcher in watchers:
        watcher.stop(wait=True)


def seed_user(
    client: firestore.Client, server: GmailApiServer, provider_user_id: str, size: int = 6, **options: Any
) -> None:
    token = f"token-{provider_user_id}"
    server.add_mailbox(token, small_mailbox(size, offset=len(provider_user_id) * 7 % 200))
    seed_account(
        client,
        provider_user_id=provider_user_id,
        family_id=f"family-{provider_user_id}",
        token=token,
        **options,
    )


def test_connect_writes_a_pending_progress_doc_then_the_sync_completes(
    firestore_client: firestore.Client,
    gmail_server: GmailApiServer,
    connect_env: Callable[..., GmailConnectWatcher],
):
    seed_user(firestore_client, gmail_server, "pu-connect", size=6)
    recorder = StatusRecorder(firestore_client)
    watcher = connect_env().start()
    try:
        connect_gmail(firestore_client, "pu-connect")

        [sync] = completed_syncs(firestore_client, "pu-connect", 1)
        statuses = recorder.wait_for(sync.syncId, "completed")
    finally:
        recorder.close()

    assert sync.details.trigger == SyncTrigger.CONNECT
    assert sync.progress == 100
    assert statuses[0] == "pending"
    assert statuses[-1] == "completed"
    assert EmailRepository(firestore_client).count("pu-connect") == 6
    assert [d.action for d in watcher.decisions] == ["started"]


def test_reconnect_after_a_disconnect_starts_a_second_sync(
    firestore_client: firestore.Client,
    gmail_server: GmailApiServer,
    connect_env: Callable[..., GmailConnectWatcher],
):
    seed_user(firestore_client, gmail_server, "pu-reconnect", size=5)
    connect_env().start()
    connect_gmail(firestore_client, "pu-reconnect")
    completed_syncs(firestore_client, "pu-reconnect", 1)

    disconnect_gmail(firestore_client, "pu-reconnect")
    connect_gmail(firestore_client, "pu-reconnect")

    first, second = completed_syncs(firestore_client, "pu-reconnect", 2)
    assert first.syncId != second.syncId
    assert second.details.trigger == SyncTrigger.CONNECT
    assert EmailRepository(firestore_client).count("pu-reconnect") == 5


def test_unrelated_update_of_a_connected_user_starts_nothing(
    firestore_client: firestore.Client,
    gmail_server: GmailApiServer,
    connect_env: Callable[..., GmailConnectWatcher],
):
    seed_user(firestore_client, gmail_server, "pu-unrelated", gmail_active=True)
    SyncStateRepository(firestore_client).complete_backfill("pu-unrelated", "100")
    watcher = connect_env().start()

    firestore_client.collection("providerUsers").document("pu-unrelated").update({"email": "new@example.com"})

    decisions = watcher.wait_for_decisions(2)
    assert [(d.action, d.reason) for d in decisions] == [
        ("skipped", "catch-up: backfill already completed (the periodic sync keeps it fresh)"),
        ("skipped", "update of an already connected user, not a connect"),
    ]
    assert progress_docs(firestore_client, "pu-unrelated") == []


def test_duplicate_connect_events_start_one_sync(
    firestore_client: firestore.Client,
    gmail_server: GmailApiServer,
    connect_env: Callable[..., GmailConnectWatcher],
):
    seed_user(firestore_client, gmail_server, "pu-duplicate", size=4)
    watcher = connect_env().start()
    connected_at = datetime.now(UTC)

    connect_gmail(firestore_client, "pu-duplicate", connected_at=connected_at)
    connect_gmail(firestore_client, "pu-duplicate", connected_at=connected_at)  # active set true twice
    wait_until(lambda: watcher.started(), what="the sync to start")
    _break_stream(watcher)  # the re-subscription re-delivers the same connect as ADDED
    wait_until(lambda: watcher.subscriptions == 2, what="re-subscription")
    completed_syncs(firestore_client, "pu-duplicate", 1)

    assert len(progress_docs(firestore_client, "pu-duplicate")) == 1
    assert len(watcher.started()) == 1
    assert any("already handled" in d.reason for d in watcher.decisions)


def test_restart_catch_up_syncs_only_users_without_completed_backfill_or_live_sync(
    firestore_client: firestore.Client,
    gmail_server: GmailApiServer,
    connect_env: Callable[..., GmailConnectWatcher],
):
    for provider_user_id in ("pu-never-synced", "pu-backfilled", "pu-syncing"):
        seed_user(firestore_client, gmail_server, provider_user_id, size=4, gmail_active=True)
    state = SyncStateRepository(firestore_client)
    state.complete_backfill("pu-backfilled", "100")
    assert state.acquire_lease("pu-syncing", "sync-elsewhere", owner="another-worker", timeout_seconds=120)

    watcher = connect_env().start()  # users connected while no watcher was running

    decisions = {d.provider_user_id: d for d in watcher.wait_for_decisions(3)}
    assert decisions["pu-never-synced"].action == "started"
    assert decisions["pu-backfilled"].action == "skipped"
    assert "backfill already completed" in decisions["pu-backfilled"].reason
    assert decisions["pu-syncing"].action == "skipped"
    assert "sync-elsewhere holds a live lease" in decisions["pu-syncing"].reason
    completed_syncs(firestore_client, "pu-never-synced", 1)
    assert EmailRepository(firestore_client).count("pu-never-synced") == 4
    assert progress_docs(firestore_client, "pu-backfilled") == []
    assert progress_docs(firestore_client, "pu-syncing") == []


def test_listener_stream_error_is_survived_by_resubscribing(
    firestore_client: firestore.Client,
    gmail_server: GmailApiServer,
    connect_env: Callable[..., GmailConnectWatcher],
):
    seed_user(firestore_client, gmail_server, "pu-outage", size=4)
    watcher = connect_env(resubscribe_initial_delay=0.5).start()

    _break_stream(watcher)
    connect_gmail(firestore_client, "pu-outage")  # lands while the listener is down or just back

    wait_until(lambda: watcher.subscriptions >= 2, what="re-subscription")
    [sync] = completed_syncs(firestore_client, "pu-outage", 1)
    assert sync.details.trigger == SyncTrigger.CONNECT
    assert len(watcher.started()) == 1


def _break_stream(watcher: GmailConnectWatcher) -> None:
    """What the client library does on a non-recoverable stream error: close the watch with a reason."""
    watch = watcher._watch
    assert watch is not None
    with contextlib.suppress(RuntimeError):
        watch.close(reason=RuntimeError("simulated stream error: UNAVAILABLE"))
