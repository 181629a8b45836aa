"""The per-user lease on the real emulator: a live sync's heartbeat keeps it however long a batch takes,
a stopped sync's lease is taken over within its timeout (at once when its process is visibly gone), and
the sync that takes over marks the stopped one's document interrupted before it does anything else."""

from __future__ import annotations

import subprocess
import time

import pytest
from google.cloud import firestore

from emailsync.firestore.progress import ProgressWriter
from emailsync.firestore.sync_state import SyncStateRepository
from emailsync.local.seed import SeededAccount, seed_account
from emailsync.models import SyncStatus, SyncTrigger
from emailsync.sync.lease import holder_identity
from emailsync.sync.run import SyncRun

pytestmark = pytest.mark.integration

LEASE_SECONDS = 2.0
HEARTBEAT_SECONDS = 0.4


@pytest.fixture
def account(firestore_client: firestore.Client) -> SeededAccount:
    return seed_account(firestore_client, provider_user_id="pu-lease", gmail_active=True)


def new_run(client: firestore.Client, account: SeededAccount, sync_id: str) -> SyncRun:
    run = SyncRun(
        sync_id=sync_id,
        provider_user_id=account.provider_user_id,
        trigger=SyncTrigger.MANUAL,
        app_user_id=account.app_user_id,
        family_id=account.family_id,
        progress=ProgressWriter(client),
        sync_state=SyncStateRepository(client),
        lease_timeout_seconds=LEASE_SECONDS,
        lease_renew_seconds=HEARTBEAT_SECONDS,
    )
    run.create_pending()
    return run


def test_a_live_sync_keeps_its_lease_past_the_timeout_and_a_stopped_one_is_taken_over_within_it(
    firestore_client: firestore.Client, account: SeededAccount
):
    first = new_run(firestore_client, account, "sync-first")
    first.hold(first.acquire_lease("worker-1"))
    assert not first.skipped and first.heartbeat.running
    time.sleep(2 * LEASE_SECONDS)  # one long batch: no checkpoint, only the heartbeat

    second = new_run(firestore_client, account, "sync-second")
    second.hold(second.acquire_lease("worker-2"))
    assert second.skipped and second.summary.active_sync_id == "sync-first"

    first.heartbeat.stop()  # its worker stops without releasing anything
    stopped_at = time.monotonic()
    third = new_run(firestore_client, account, "sync-third")
    while True:
        attempt = third.acquire_lease("worker-3")
        if attempt.acquired or time.monotonic() - stopped_at > 5 * LEASE_SECONDS:
            break
        time.sleep(0.1)
    third.hold(attempt)

    assert attempt.acquired and attempt.taken_over_from == "sync-first"
    assert time.monotonic() - stopped_at < LEASE_SECONDS + 2.0
    interrupted = ProgressWriter(firestore_client).get("sync-first")
    assert interrupted is not None and interrupted.status is SyncStatus.FAILED
    assert "interrupted" in (interrupted.error or "") and "sync-third resumed it" in (interrupted.error or "")
    with third.reported():
        pass
    state = SyncStateRepository(firestore_client).get(account.provider_user_id)
    assert state.active_sync_id is None and not third.heartbeat.running


def test_a_lease_whose_process_is_gone_is_taken_over_at_once(
    firestore_client: firestore.Client, account: SeededAccount
):
    child = subprocess.Popen(["sleep", "60"])
    identity = holder_identity(child.pid)
    child.kill()
    child.wait()
    state = SyncStateRepository(firestore_client)
    dead = new_run(firestore_client, account, "sync-killed")
    assert state.acquire_lease(account.provider_user_id, "sync-killed", "worker-k", 300, holder=identity)
    state.record_slot_lease(account.provider_user_id, "sync-killed", "slot-lease-of-the-killed-sync")
    ProgressWriter(firestore_client).start(dead.sync_id, mode="backfill")

    rerun = new_run(firestore_client, account, "sync-rerun")
    attempt = rerun.acquire_lease("worker-r")
    rerun.hold(attempt)

    assert attempt.acquired and attempt.taken_over_from == "sync-killed"
    assert rerun.stale_slot_lease_id == "slot-lease-of-the-killed-sync"
    killed = ProgressWriter(firestore_client).get("sync-killed")
    assert killed is not None and killed.status is SyncStatus.FAILED and "interrupted" in (killed.error or "")
    rerun.release_lease()


def test_a_lease_of_a_live_process_is_not_taken_over(
    firestore_client: firestore.Client, account: SeededAccount
):
    state = SyncStateRepository(firestore_client)
    assert state.acquire_lease(account.provider_user_id, "sync-alive", "w", 300, holder=holder_identity())

    other = new_run(firestore_client, account, "sync-other")
    other.hold(other.acquire_lease("worker-o"))

    assert other.skipped and other.summary.active_sync_id == "sync-alive"
