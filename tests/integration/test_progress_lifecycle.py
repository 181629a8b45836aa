"""What the frontend sees of a sync's whole life on the real emulator: a skipped trigger, a retried run
reopening its document, retention (`expireAt`) and a pending sync whose run never started."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from google.cloud import firestore

from emailsync.config import get_settings
from emailsync.firestore.progress import IllegalTransitionError, ProgressWriter
from emailsync.models import SyncMode, SyncTrigger

pytestmark = pytest.mark.integration


@pytest.fixture
def writer(firestore_client: firestore.Client) -> ProgressWriter:
    return ProgressWriter(firestore_client, min_interval_seconds=0)


def stored(client: firestore.Client, sync_id: str) -> dict[str, Any]:
    return client.collection("syncProgress").document(sync_id).get().to_dict()


def create(writer: ProgressWriter, sync_id: str) -> None:
    writer.create_pending(sync_id, "alice", "smiths", "alice-gmail", SyncTrigger.MANUAL)


def days_from_now(value: datetime) -> float:
    return (value - datetime.now(UTC)).total_seconds() / 86400


def test_a_skipped_trigger_is_its_own_terminal_status_linked_to_the_active_sync_never_completed_100(
    writer: ProgressWriter, firestore_client: firestore.Client
) -> None:
    create(writer, "sync-skipped")

    writer.skip("sync-skipped", "sync-running", "already_syncing", flow_run_id="run-2")

    document = stored(firestore_client, "sync-skipped")
    assert (document["status"], document["progress"], document["error"]) == ("skipped", 0, None)
    assert document["details"]["skipped"] is True
    assert document["details"]["skipReason"] == "already_syncing"
    assert document["details"]["activeSyncId"] == "sync-running"
    with pytest.raises(IllegalTransitionError):
        writer.complete("sync-skipped")
    with pytest.raises(IllegalTransitionError):  # a retry of a skipped trigger is a new sync
        writer.create_pending("sync-skipped", "alice", "smiths", "alice-gmail", reopen=True)


def test_a_retried_run_reopens_its_failed_document_keeping_progress_and_counting_the_attempt(
    writer: ProgressWriter, firestore_client: firestore.Client
) -> None:
    create(writer, "sync-retried")
    writer.start("sync-retried", SyncMode.BACKFILL, "run-1", 300)
    writer.update("sync-retried", 40, emails_processed=120)
    writer.fail("sync-retried", "Gmail API unavailable")
    with pytest.raises(IllegalTransitionError):  # a reused id is refused unless it is a retry
        create(writer, "sync-retried")

    reopened = writer.create_pending("sync-retried", "alice", "smiths", "alice-gmail", reopen=True)

    document = stored(firestore_client, "sync-retried")
    assert (document["status"], document["progress"], document["error"]) == ("pending", 40, None)
    assert document["details"]["attempt"] == 2
    assert document["details"]["previousError"] == "Gmail API unavailable"
    assert document["details"]["emailsProcessed"] == 120
    assert reopened.status.value == "pending"
    writer.start("sync-retried", SyncMode.BACKFILL, "run-1")
    writer.update("sync-retried", 10)  # never lower than where the failed attempt got to
    assert stored(firestore_client, "sync-retried")["progress"] == 40
    writer.complete("sync-retried")
    assert stored(firestore_client, "sync-retried")["status"] == "completed"
    with pytest.raises(IllegalTransitionError):  # a completed sync is never reopened
        writer.create_pending("sync-retried", "alice", "smiths", "alice-gmail", reopen=True)


def test_a_retried_crashed_run_reopens_the_in_progress_document_its_dead_worker_left(
    writer: ProgressWriter, firestore_client: firestore.Client
) -> None:
    create(writer, "sync-crashed")
    writer.start("sync-crashed", SyncMode.BACKFILL, "run-9", 100)
    writer.update("sync-crashed", 30)  # then the worker was killed: the document stays in_progress

    writer.create_pending("sync-crashed", "alice", "smiths", "alice-gmail", reopen=True)

    document = stored(firestore_client, "sync-crashed")
    assert (document["status"], document["progress"]) == ("pending", 30)
    assert document["details"]["attempt"] == 2 and document["details"]["reopenedFrom"] == "in_progress"


def test_every_document_carries_expire_at_and_failed_ones_are_kept_longer(
    writer: ProgressWriter, firestore_client: firestore.Client
) -> None:
    settings = get_settings()
    for sync_id in ("sync-done", "sync-broken", "sync-waiting"):
        create(writer, sync_id)
    writer.complete("sync-done")
    writer.fail("sync-broken", "boom")

    done = days_from_now(stored(firestore_client, "sync-done")["expireAt"])
    broken = days_from_now(stored(firestore_client, "sync-broken")["expireAt"])
    waiting = days_from_now(stored(firestore_client, "sync-waiting")["expireAt"])
    assert done == pytest.approx(settings.progress_retention_days, abs=0.01)
    assert broken == pytest.approx(settings.failed_progress_retention_days, abs=0.01)
    assert waiting == pytest.approx(settings.failed_progress_retention_days, abs=0.01)
    assert broken > done


def test_a_pending_sync_whose_run_never_started_is_failed_with_the_reason(
    writer: ProgressWriter, firestore_client: firestore.Client
) -> None:
    create(writer, "sync-stale")
    create(writer, "sync-fresh")
    create(writer, "sync-running")
    writer.start("sync-running", SyncMode.INCREMENTAL)
    # Requested an hour ago (as if the watcher wrote it then), and no worker ever picked its run up.
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    firestore_client.collection("syncProgress").document("sync-stale").update({"updatedAt": an_hour_ago})
    firestore_client.collection("syncProgress").document("sync-running").update({"updatedAt": an_hour_ago})

    failed = writer.fail_stale_pending(older_than_seconds=600)

    assert failed == ["sync-stale"]
    stale = stored(firestore_client, "sync-stale")
    assert stale["status"] == "failed" and "did not start within 600 s" in stale["error"]
    assert days_from_now(stale["expireAt"]) > get_settings().progress_retention_days
    assert stored(firestore_client, "sync-fresh")["status"] == "pending"
    assert stored(firestore_client, "sync-running")["status"] == "in_progress"
    # A stale pending document whose run is just starting is claimed by it, so the sweep leaves it be.
    create(writer, "sync-late")
    firestore_client.collection("syncProgress").document("sync-late").update({"updatedAt": an_hour_ago})
    writer.create_pending("sync-late", "alice", "smiths", "alice-gmail", reopen=True)
    assert writer.fail_stale_pending(older_than_seconds=600) == []
    assert stored(firestore_client, "sync-late")["status"] == "pending"
    # The run starts after all: it reopens the document instead of failing on it.
    writer.create_pending("sync-stale", "alice", "smiths", "alice-gmail", reopen=True)
    writer.start("sync-stale", SyncMode.BACKFILL)
    assert stored(firestore_client, "sync-stale")["status"] == "in_progress"


def test_the_watcher_fails_pending_syncs_whose_run_never_started(
    writer: ProgressWriter, firestore_client: firestore.Client
) -> None:
    from deployments.launchers import InProcessLauncher
    from deployments.watcher import GmailConnectWatcher

    create(writer, "sync-never-started")
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    firestore_client.collection("syncProgress").document("sync-never-started").update(
        {"updatedAt": an_hour_ago}
    )
    watcher = GmailConnectWatcher(
        firestore_client,
        launcher=InProcessLauncher(max_workers=1),
        progress_writer=writer,
        pending_start_timeout=timedelta(minutes=15),
        pending_sweep_interval=0.2,
    )
    with watcher:
        deadline = time.monotonic() + 20
        while stored(firestore_client, "sync-never-started")["status"] == "pending":
            assert time.monotonic() < deadline, "the watcher never swept the stale pending sync"
            time.sleep(0.1)

    document = stored(firestore_client, "sync-never-started")
    assert document["status"] == "failed" and "did not start within 900 s" in document["error"]
