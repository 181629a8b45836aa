"""The progress writer against the real emulator: what a subscribed frontend sees in `syncProgress`."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from google.cloud import firestore

from emailsync.firestore.progress import (
    IllegalTransitionError,
    ProgressWriter,
    SyncProgressNotFoundError,
    get_progress_writer,
)
from emailsync.models import SyncMode, SyncStatus, SyncTrigger

pytestmark = pytest.mark.integration

SYNC = "sync-1"


@pytest.fixture
def writer(firestore_client: firestore.Client) -> ProgressWriter:
    """No coalescing: every call is one write (coalescing has its own tests below)."""
    return ProgressWriter(firestore_client, min_interval_seconds=0)


def stored(client: firestore.Client, sync_id: str = SYNC) -> dict[str, Any]:
    return client.collection("syncProgress").document(sync_id).get().to_dict()


def create(writer: ProgressWriter, sync_id: str = SYNC) -> None:
    writer.create_pending(sync_id, "alice", "smiths", "alice-gmail", SyncTrigger.CONNECT)


class DocumentWatch:
    """An `on_snapshot` listener, as the frontend has: records every version of the document it sees."""

    def __init__(self, client: firestore.Client, sync_id: str) -> None:
        self.versions: list[dict[str, Any]] = []
        self._changed = threading.Condition()
        self._watch = client.collection("syncProgress").document(sync_id).on_snapshot(self._on_snapshot)

    def _on_snapshot(self, snapshots: list[Any], _changes: Any, _read_time: Any) -> None:
        with self._changed:
            for snapshot in snapshots:
                if snapshot.exists:
                    self.versions.append(snapshot.to_dict())
            self._changed.notify_all()

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 15.0) -> dict[str, Any]:
        with self._changed:
            assert self._changed.wait_for(
                lambda: bool(self.versions) and predicate(self.versions[-1]), timeout
            )
            return self.versions[-1]

    def close(self) -> None:
        self._watch.unsubscribe()


@pytest.fixture
def watch(firestore_client: firestore.Client) -> Iterator[Callable[[str], DocumentWatch]]:
    watches: list[DocumentWatch] = []

    def start(sync_id: str) -> DocumentWatch:
        watches.append(DocumentWatch(firestore_client, sync_id))
        return watches[-1]

    yield start
    for each in watches:
        each.close()


# ---------------------------------------------------------------------------------------- lifecycle


def test_create_pending_writes_the_design_document(
    writer: ProgressWriter, firestore_client: firestore.Client
) -> None:
    returned = writer.create_pending(SYNC, "alice", "smiths", "alice-gmail", SyncTrigger.CONNECT)

    document = stored(firestore_client)
    assert document["syncId"] == SYNC
    assert (document["appUserId"], document["familyId"], document["providerUserId"]) == (
        "alice",
        "smiths",
        "alice-gmail",
    )
    assert (document["type"], document["status"], document["progress"], document["error"]) == (
        "email",
        "pending",
        0,
        None,
    )
    assert document["details"]["trigger"] == "connect"
    assert document["startedAt"] is not None and document["updatedAt"] is not None
    assert returned.status is SyncStatus.PENDING
    assert returned.startedAt == document["startedAt"]


def test_create_pending_twice_returns_the_existing_pending_document(
    writer: ProgressWriter, firestore_client: firestore.Client
) -> None:
    first = writer.create_pending(SYNC, "alice", "smiths", "alice-gmail", SyncTrigger.CONNECT)
    second = writer.create_pending(SYNC, "alice", "smiths", "alice-gmail", SyncTrigger.CONNECT)

    assert second == first
    assert stored(firestore_client)["updatedAt"] == first.updatedAt


def test_a_sync_runs_from_pending_through_in_progress_to_completed(
    writer: ProgressWriter, firestore_client: firestore.Client
) -> None:
    create(writer)

    writer.start(SYNC, SyncMode.BACKFILL, flow_run_id="run-1", total_estimate=300)
    started = stored(firestore_client)
    writer.update(SYNC, 40, emails_processed=120, batches=2)
    updated = stored(firestore_client)
    writer.complete(SYNC, emails_processed=300)
    completed = stored(firestore_client)

    assert (started["status"], started["progress"]) == ("in_progress", 0)
    assert started["details"]["mode"] == "backfill"
    assert started["details"]["flowRunId"] == "run-1"
    assert started["details"]["emailsTotalEstimate"] == 300
    assert (updated["status"], updated["progress"], updated["details"]["emailsProcessed"]) == (
        "in_progress",
        40,
        120,
    )
    assert (completed["status"], completed["progress"], completed["error"]) == ("completed", 100, None)
    assert completed["details"]["emailsProcessed"] == 300
    assert completed["details"]["trigger"] == "connect"  # details merge, they are never replaced
    assert completed["details"]["flowRunId"] == "run-1"


def test_every_write_stamps_updated_at(writer: ProgressWriter, firestore_client: firestore.Client) -> None:
    create(writer)
    stamps = [stored(firestore_client)["updatedAt"]]
    for write in (
        lambda: writer.start(SYNC, SyncMode.INCREMENTAL),
        lambda: writer.update(SYNC, 10),
        lambda: writer.complete(SYNC),
    ):
        write()
        stamps.append(stored(firestore_client)["updatedAt"])

    assert stamps == sorted(stamps)
    assert len(set(stamps)) == len(stamps)


def test_a_failure_keeps_its_progress_and_says_why(
    writer: ProgressWriter, firestore_client: firestore.Client
) -> None:
    create(writer)
    writer.start(SYNC, SyncMode.BACKFILL)
    writer.update(SYNC, 35)

    writer.fail(SYNC, RuntimeError("Gmail authorization revoked: the user must reconnect Gmail"))

    document = stored(firestore_client)
    assert (document["status"], document["progress"]) == ("failed", 35)
    assert document["error"] == "Gmail authorization revoked: the user must reconnect Gmail"


@pytest.mark.parametrize("finish", ["complete", "fail"])
def test_a_pending_sync_may_finish_without_starting(
    writer: ProgressWriter, firestore_client: firestore.Client, finish: str
) -> None:
    create(writer)

    if finish == "complete":
        writer.complete(SYNC)
    else:
        writer.fail(SYNC, "no Gmail credentials stored")

    assert stored(firestore_client)["status"] == {"complete": "completed", "fail": "failed"}[finish]


def test_a_resumed_sync_may_start_again_while_in_progress(
    writer: ProgressWriter, firestore_client: firestore.Client
) -> None:
    create(writer)
    writer.start(SYNC, SyncMode.BACKFILL, flow_run_id="run-1")
    writer.update(SYNC, 60)

    writer.start(SYNC, SyncMode.BACKFILL, flow_run_id="run-2")

    document = stored(firestore_client)
    assert (document["status"], document["progress"], document["details"]["flowRunId"]) == (
        "in_progress",
        60,
        "run-2",
    )


TERMINAL_MOVES: dict[str, Callable[[ProgressWriter], Any]] = {
    "start": lambda writer: writer.start(SYNC, SyncMode.BACKFILL),
    "update": lambda writer: writer.update(SYNC, 99),
    "complete": lambda writer: writer.complete(SYNC),
    "fail": lambda writer: writer.fail(SYNC, "late failure"),
    "create_pending": create,
}


@pytest.mark.parametrize("move", list(TERMINAL_MOVES))
@pytest.mark.parametrize("terminal", ["completed", "failed"])
def test_a_finished_sync_refuses_every_further_write_and_stays_unchanged(
    writer: ProgressWriter, firestore_client: firestore.Client, terminal: str, move: str
) -> None:
    create(writer)
    writer.start(SYNC, SyncMode.BACKFILL)
    writer.update(SYNC, 50)
    if terminal == "completed":
        writer.complete(SYNC)
    else:
        writer.fail(SYNC, "quota exhausted")
    before = stored(firestore_client)
    target = {"start": "in_progress", "update": "in_progress", "complete": "completed", "fail": "failed"}
    target["create_pending"] = "pending"

    with pytest.raises(
        IllegalTransitionError, match=f"sync {SYNC} is {terminal}; cannot move to {target[move]}"
    ):
        TERMINAL_MOVES[move](writer)

    assert stored(firestore_client) == before


def test_a_finished_sync_is_refused_by_another_writer_that_never_saw_it(
    writer: ProgressWriter, firestore_client: firestore.Client
) -> None:
    create(writer)
    writer.complete(SYNC)
    other_process = ProgressWriter(firestore_client, min_interval_seconds=0)

    with pytest.raises(IllegalTransitionError, match="is completed; cannot move to in_progress"):
        other_process.update(SYNC, 10)
    assert stored(firestore_client)["status"] == "completed"


def test_progress_of_an_unknown_sync_is_refused(writer: ProgressWriter) -> None:
    with pytest.raises(SyncProgressNotFoundError, match="create_pending"):
        writer.update("never-created", 10)


# ---------------------------------------------------------------------------------------- values


def test_progress_never_goes_down_and_stays_within_0_and_100(
    writer: ProgressWriter, firestore_client: firestore.Client
) -> None:
    create(writer)
    writer.start(SYNC, SyncMode.BACKFILL)
    seen = []
    for value in (30, 20, -5, 70, 150):
        writer.update(SYNC, value)
        seen.append(stored(firestore_client)["progress"])

    assert seen == [30, 30, 30, 70, 100]


def test_detail_updates_merge_with_keys_written_by_others(
    writer: ProgressWriter, firestore_client: firestore.Client
) -> None:
    create(writer)
    writer.start(SYNC, SyncMode.BACKFILL)
    firestore_client.collection("syncProgress").document(SYNC).update({"details.quotaWaitSeconds": 2.5})

    writer.update(SYNC, 10, emails_processed=50, current_window={"start": "2026-01-01", "end": "2026-01-08"})

    details = stored(firestore_client)["details"]
    assert details["quotaWaitSeconds"] == 2.5
    assert details["emailsProcessed"] == 50
    assert details["currentWindow"] == {"start": "2026-01-01", "end": "2026-01-08"}
    assert details["mode"] == "backfill"


def test_the_process_wide_writer_is_one_instance() -> None:
    assert get_progress_writer() is get_progress_writer()


# ---------------------------------------------------------------------------------------- coalescing


def test_rapid_updates_reach_the_listener_about_once_a_second_and_the_last_value_arrives(
    firestore_client: firestore.Client, watch: Callable[[str], DocumentWatch]
) -> None:
    writer = ProgressWriter(firestore_client, min_interval_seconds=1.0)
    create(writer)
    writer.start(SYNC, SyncMode.BACKFILL)
    listener = watch(SYNC)
    listener.wait_for(lambda document: document["status"] == "in_progress")
    versions_before = len(listener.versions)

    began = time.monotonic()
    for step in range(1, 31):  # 30 updates in about 3 seconds
        writer.update(SYNC, step * 3, emails_processed=step * 10)
        time.sleep(0.1)
    final = listener.wait_for(lambda document: document["details"]["emailsProcessed"] == 300)
    elapsed = time.monotonic() - began

    writes_seen = len(listener.versions) - versions_before
    assert final["progress"] == 90
    assert 2 <= writes_seen <= elapsed + 2


def test_complete_right_after_updates_is_written_at_once_and_stays_last(
    firestore_client: firestore.Client, watch: Callable[[str], DocumentWatch]
) -> None:
    writer = ProgressWriter(firestore_client, min_interval_seconds=1.0)
    create(writer)
    writer.start(SYNC, SyncMode.BACKFILL)
    listener = watch(SYNC)
    for step in range(1, 6):  # all inside the first second: coalesced, none written yet
        writer.update(SYNC, step * 10, emails_processed=step)

    writer.complete(SYNC)

    assert stored(firestore_client)["status"] == "completed"  # written before complete() returned
    listener.wait_for(lambda document: document["status"] == "completed")
    writer.flush()  # nothing may be waiting any more; a stale update would land here
    time.sleep(1.2)  # past the moment the cancelled coalesced write was due
    last = listener.versions[-1]
    assert (last["status"], last["progress"], last["details"]["emailsProcessed"]) == ("completed", 100, 5)


def test_concurrent_updates_from_many_threads_end_at_the_highest_value(
    firestore_client: firestore.Client,
) -> None:
    writer = ProgressWriter(firestore_client, min_interval_seconds=0.2)
    create(writer)
    writer.start(SYNC, SyncMode.BACKFILL)

    def report(offset: int) -> None:
        for step in range(10):
            writer.update(SYNC, offset + step * 8)

    threads = [threading.Thread(target=report, args=(offset,)) for offset in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    writer.flush()

    assert stored(firestore_client)["progress"] == 7 + 9 * 8
