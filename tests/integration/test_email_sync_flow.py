"""The `email_sync` flow end to end: real Firestore emulator, real local Gmail API server over HTTP,
real local enrichment, real Prefect API (one temporary server per session)."""

from __future__ import annotations

import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest
from google.cloud import firestore
from google.cloud.firestore_v1.vector import Vector
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.logging.configuration import setup_logging

from emailsync.config import get_settings
from emailsync.errors import AuthorizationRevokedError
from emailsync.firestore.client import get_firestore_client, reset_clients
from emailsync.firestore.emails import EmailRepository
from emailsync.firestore.progress import ProgressWriter
from emailsync.firestore.sync_state import SyncStateRepository
from emailsync.local.firestore_emulator import FirestoreEmulator
from emailsync.local.gmail_server.server import GmailApiServer
from emailsync.local.mailbox import Mailbox
from emailsync.local.seed import SeededAccount, seed_account
from emailsync.models import SyncMode, SyncProgress, SyncStatus
from tests.fixtures.firestore import TEST_PROJECT, progress_docs
from tests.fixtures.gmail import REPO_ROOT
from tests.fixtures.prefect import PrefectTestServer

pytestmark = [pytest.mark.integration, pytest.mark.prefect]

# Fast enough that the quota is not what these tests wait for (the quota has its own benchmark).
TEST_QUOTA_UNITS_PER_SECOND = 2500


@pytest.fixture
def sync_environment(
    monkeypatch: pytest.MonkeyPatch, prefect_server: PrefectTestServer, firestore_client: firestore.Client
) -> Callable[..., None]:
    """Point the flow (through get_settings) at a Gmail server: `sync_environment(server, **env)`."""

    def configure(server: GmailApiServer, **env: str) -> None:
        monkeypatch.setenv("GMAIL_API_ENDPOINT", server.url)
        monkeypatch.setenv("EMAILSYNC_QUOTA_UNITS_PER_SECOND", str(server.quota_units_per_second or 0))
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        get_settings.cache_clear()

    yield configure
    get_settings.cache_clear()


@pytest.fixture
def account(firestore_client: firestore.Client) -> SeededAccount:
    return seed_account(firestore_client, provider_user_id="pu-alex", token="alex-token", gmail_active=True)


@pytest.fixture
def fast_gmail(gmail_server: GmailApiServer) -> GmailApiServer:
    gmail_server.configure(quota_units_per_second=TEST_QUOTA_UNITS_PER_SECOND)
    return gmail_server


def run_sync(provider_user_id: str, **kwargs: Any):  # -> SyncSummary
    from flows.email_sync import email_sync

    return email_sync(provider_user_id, **kwargs)


class ProgressListener:
    """Every snapshot of one syncProgress document, as the web app's live subscription sees them."""

    def __init__(self, client: firestore.Client, sync_id: str) -> None:
        self.snapshots: list[dict[str, Any]] = []
        self._done = threading.Event()
        self._watch = client.collection("syncProgress").document(sync_id).on_snapshot(self._on_snapshot)

    def _on_snapshot(self, documents: list[Any], _changes: Any, _read_time: Any) -> None:
        for document in documents:
            if document.exists:
                data = document.to_dict()
                self.snapshots.append(data)
                if data.get("status") in ("completed", "failed"):
                    self._done.set()

    def wait_until_finished(self, timeout: float = 30) -> None:
        assert self._done.wait(timeout), f"no final snapshot; saw {[s.get('status') for s in self.snapshots]}"

    def close(self) -> None:
        self._watch.unsubscribe()


@pytest.fixture
def listen() -> Iterator[Callable[[firestore.Client, str], ProgressListener]]:
    listeners: list[ProgressListener] = []

    def make(client: firestore.Client, sync_id: str) -> ProgressListener:
        listener = ProgressListener(client, sync_id)
        listeners.append(listener)
        return listener

    yield make
    for listener in listeners:
        listener.close()


# ------------------------------------------------------------------------------------------ backfill


def test_backfill_of_the_sample_mailbox_stores_every_message_once_enriched_with_live_monotone_progress(
    firestore_client, account, fast_gmail, sync_environment, listen
):
    sync_environment(fast_gmail)
    mailbox_ids = {message.id for message in fast_gmail.mailbox.newest_first()}
    sync_id = "pu-alex-connect-test-1"
    ProgressWriter(firestore_client).create_pending(
        sync_id, account.app_user_id, account.family_id, account.provider_user_id, "connect"
    )
    listener = listen(firestore_client, sync_id)

    summary = run_sync(account.provider_user_id, trigger="connect", sync_id=sync_id)

    emails = EmailRepository(firestore_client)
    assert set(emails.list_ids(account.provider_user_id)) == mailbox_ids
    assert emails.count(account.provider_user_id) == len(mailbox_ids) == 300
    stored = [
        snapshot.to_dict()
        for snapshot in firestore_client.collection("providerUsers")
        .document(account.provider_user_id)
        .collection("emails")
        .stream()
    ]
    assert all(isinstance(doc["embedding"], Vector) and len(doc["embedding"]) == 384 for doc in stored)
    assert all(doc["summary"] and doc["tags"] and doc["enrichment"]["model"] for doc in stored)
    assert all(doc["appUserId"] == account.app_user_id for doc in stored)

    final = ProgressWriter(firestore_client).get(sync_id)
    assert final is not None and final.status is SyncStatus.COMPLETED and final.progress == 100
    details = final.details.model_dump(by_alias=True)
    assert details["trigger"] == "connect" and details["mode"] == "backfill"
    assert details["emailsProcessed"] == 300 and details["emailsStored"] == 300
    assert details["flowRunId"] == summary.flow_run_id and details["currentWindow"]["start"]
    assert summary.emails_stored == summary.emails_enriched == 300 and not summary.skipped

    listener.wait_until_finished()
    statuses = [snapshot["status"] for snapshot in listener.snapshots]
    percents = [snapshot["progress"] for snapshot in listener.snapshots]
    assert statuses[0] in ("pending", "in_progress") and statuses[-1] == "completed"
    assert percents == sorted(percents) and percents[-1] == 100
    assert all(p < 100 for p, s in zip(percents, statuses, strict=True) if s != "completed")

    state = SyncStateRepository(firestore_client).get(account.provider_user_id)
    assert state.backfill_completed and state.last_history_id and state.active_sync_id is None

    limit_name = f"email-sync:{account.provider_user_id}"
    with get_client(sync_client=True) as client:
        assert client.read_global_concurrency_limit_by_name(limit_name).limit == 1


# ------------------------------------------------------------------------------------------ helpers


def small_mailbox(sample_mailbox: Mailbox, count: int) -> Mailbox:
    """`count` sample messages spread over the whole sample (so over many weeks), newest dated now."""
    messages = sample_mailbox.newest_first()
    step = len(messages) // count
    return Mailbox.from_raw_messages([messages[i * step].raw for i in range(count)], shift_dates=True)


def all_ids(mailbox: Mailbox) -> set[str]:
    return {message.id for message in mailbox.newest_first()}


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


# ------------------------------------------------------------------------------------------ resume


@pytest.fixture
def private_firestore(monkeypatch: pytest.MonkeyPatch, firestore_emulator) -> Iterator[firestore.Client]:
    """A Firestore emulator of this test alone. A process killed inside a transaction leaves its
    document locks behind for good in the emulator (which then refuses to clear the project), so the
    shared session emulator must never see a kill."""
    emulator = FirestoreEmulator().start()
    try:
        for name, value in emulator.environ(TEST_PROJECT).items():
            monkeypatch.setenv(name, value)
        get_settings.cache_clear()
        yield get_firestore_client(TEST_PROJECT)
    finally:
        emulator.stop()
        get_settings.cache_clear()
        reset_clients()


def test_sync_killed_at_random_points_resumes_from_its_checkpoint_to_exactly_the_mailbox(
    private_firestore, sample_mailbox, make_gmail_server, prefect_server, sync_environment, tmp_path
):
    account = seed_account(
        private_firestore, provider_user_id="pu-kill", token="kill-token", gmail_active=True
    )
    mailbox = small_mailbox(sample_mailbox, 80)
    server = make_gmail_server(mailbox, quota_units_per_second=TEST_QUOTA_UNITS_PER_SECOND)
    lease_seconds = 3
    sync_environment(server, EMAILSYNC_BATCH_SIZE="10", EMAILSYNC_LEASE_TIMEOUT_SECONDS=str(lease_seconds))
    child_environment = {**os.environ, **prefect_server.environ()}  # emulator, Gmail server, settings
    emails = EmailRepository(private_firestore)
    sync_state = SyncStateRepository(private_firestore)
    rng = random.Random(20261125)
    kills = 0
    for attempt in range(2):
        stored_before = emails.count(account.provider_user_id)
        kill_after_stored = min(stored_before + rng.randint(1, 25), len(mailbox) - 30)
        with (tmp_path / f"sync-{attempt}.log").open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "flows.email_sync", account.provider_user_id],
                cwd=REPO_ROOT,
                env=child_environment,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            try:
                wait_for(
                    lambda process=process, threshold=kill_after_stored: (
                        process.poll() is not None or emails.count(account.provider_user_id) >= threshold
                    ),
                    timeout=120,
                    what="the sync subprocess to store messages",
                )
                time.sleep(rng.uniform(0.0, 0.8))  # somewhere inside the next batch
                if process.poll() is None:
                    process.send_signal(signal.SIGKILL)
                    kills += 1
            finally:
                if process.poll() is None:
                    process.kill()
                process.wait(timeout=30)
        state = sync_state.get(account.provider_user_id)
        assert state.backfill_cursor is not None and not state.backfill_completed, (
            "killed before any checkpoint"
        )
        time.sleep(lease_seconds + 0.5)  # the dead sync's lease expires; the next one takes it over
    assert kills == 2
    gets_before_rerun = server.stats.requests_by_method.get("messages.get", 0)

    summary = run_sync(account.provider_user_id)

    assert summary.resumed and not summary.skipped
    ids = emails.list_ids(account.provider_user_id)
    assert len(ids) == len(set(ids)) == emails.count(account.provider_user_id) == len(mailbox)
    assert set(ids) == all_ids(mailbox)
    # The rerun fetched only what the killed runs had not stored (plus at most the batch in flight).
    gets_by_rerun = server.stats.requests_by_method.get("messages.get", 0) - gets_before_rerun
    assert gets_by_rerun < len(mailbox)
    docs = {doc.syncId: doc for doc in progress_docs(private_firestore, account.provider_user_id)}
    assert docs[summary.sync_id].status is SyncStatus.COMPLETED and docs[summary.sync_id].progress == 100
    assert docs[summary.sync_id].details.model_dump(by_alias=True)["emailsProcessed"] == len(mailbox)
    interrupted = [doc for doc in docs.values() if doc.syncId != summary.sync_id]
    assert len(interrupted) == 2 and not any(doc.status is SyncStatus.COMPLETED for doc in interrupted)
    state = sync_state.get(account.provider_user_id)
    assert state.backfill_completed and state.backfill_cursor is None and state.active_sync_id is None


# ------------------------------------------------------------------------------------------ failures


def test_flaky_gmail_failing_one_call_in_ten_still_syncs_every_message(
    firestore_client, account, sample_mailbox, make_gmail_server, sync_environment
):
    mailbox = small_mailbox(sample_mailbox, 60)
    server = make_gmail_server(
        mailbox, quota_units_per_second=TEST_QUOTA_UNITS_PER_SECOND, fail_rate=0.1, seed=11
    )
    sync_environment(server)

    summary = run_sync(account.provider_user_id)

    assert server.stats.errors_injected > 0
    assert set(EmailRepository(firestore_client).list_ids(account.provider_user_id)) == all_ids(mailbox)
    [doc] = progress_docs(firestore_client, account.provider_user_id)
    assert doc.status is SyncStatus.COMPLETED and doc.syncId == summary.sync_id


def test_revoked_gmail_authorization_fails_the_sync_at_once_without_retries_and_releases_the_lease(
    firestore_client, account, fast_gmail, sync_environment
):
    sync_environment(fast_gmail)
    fast_gmail.revoke(account.token)

    with pytest.raises(AuthorizationRevokedError):
        run_sync(account.provider_user_id)

    [doc] = progress_docs(firestore_client, account.provider_user_id)
    assert doc.status is SyncStatus.FAILED and "Gmail authorization revoked" in (doc.error or "")
    # One call, answered 401: neither the Gmail client nor Prefect tried again.
    assert fast_gmail.stats.requests_by_method == {"getProfile": 1}
    flow_run_id = doc.details.model_dump(by_alias=True)["flowRunId"]
    with get_client(sync_client=True) as client:
        task_runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(flow_run_id)]))
        )
    profile_runs = [run for run in task_runs if run.name.startswith("read-gmail-profile")]
    assert len(profile_runs) == 1 and all(run.run_count <= 1 for run in task_runs)
    assert SyncStateRepository(firestore_client).get(account.provider_user_id).active_sync_id is None


# ------------------------------------------------------------------------------------------ concurrency


class RecordingHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_twenty_simultaneous_triggers_for_one_user_run_exactly_one_sync_and_skip_the_rest(
    firestore_client, account, sample_mailbox, make_gmail_server, sync_environment
):
    mailbox = small_mailbox(sample_mailbox, 20)
    server = make_gmail_server(mailbox, quota_units_per_second=TEST_QUOTA_UNITS_PER_SECOND)
    sync_environment(server)
    setup_logging()  # Prefect configures logging at its first run; done later, it would drop our handler
    flow_run_log = RecordingHandler()
    logging.getLogger("prefect.flow_runs").addHandler(flow_run_log)
    start = threading.Barrier(20)
    summaries: list[Any] = []
    errors: list[BaseException] = []

    def trigger() -> None:
        start.wait()
        try:
            summaries.append(run_sync(account.provider_user_id))
        except BaseException as exc:
            errors.append(exc)

    # Gmail holds every call until all twenty triggers have been decided, so the one sync that took the
    # lease is still running when the last trigger arrives, however slowly twenty flow runs get created.
    server.pause()
    threads = [threading.Thread(target=trigger) for _ in range(20)]
    for thread in threads:
        thread.start()
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(skipped_docs(firestore_client, account)) < 19:
            time.sleep(0.2)
    finally:
        server.resume()
    for thread in threads:
        thread.join(timeout=150)
    logging.getLogger("prefect.flow_runs").removeHandler(flow_run_log)

    assert not errors and len(summaries) == 20
    ran = [summary for summary in summaries if not summary.skipped]
    assert len(ran) == 1, [(s.sync_id, s.mode, s.emails_processed, s.timings.wall_seconds) for s in ran]
    [winner] = ran
    assert all(summary.active_sync_id == winner.sync_id for summary in summaries if summary.skipped)
    assert winner.emails_stored == len(mailbox)
    assert EmailRepository(firestore_client).count(account.provider_user_id) == len(mailbox)
    docs = progress_docs(firestore_client, account.provider_user_id)
    assert len(docs) == 20
    [real] = [doc for doc in docs if doc.status is SyncStatus.COMPLETED]
    assert real.syncId == winner.sync_id and real.progress == 100
    # The skipped triggers: "already syncing", never a finished 100% sync.
    assert all(doc.status is SyncStatus.SKIPPED and doc.progress == 0 for doc in docs if doc is not real)
    skipped_details = [doc.details.model_extra or {} for doc in docs if doc.syncId != real.syncId]
    assert all(extra.get("skipReason") == "already_syncing" for extra in skipped_details)
    assert all(extra.get("activeSyncId") == winner.sync_id for extra in skipped_details)
    skipped_line = f"skipped: sync {winner.sync_id} already running for {account.provider_user_id}"
    assert sum(skipped_line in message for message in flow_run_log.messages) == 19


def skipped_docs(client: firestore.Client, account: SeededAccount) -> list[SyncProgress]:
    return [
        doc
        for doc in progress_docs(client, account.provider_user_id)
        if doc.status is SyncStatus.SKIPPED and (doc.details.model_extra or {}).get("skipped")
    ]


# ------------------------------------------------------------------------------------------ incremental


def test_incremental_sync_fetches_only_new_messages_and_an_expired_history_falls_back_to_one_backfill(
    firestore_client, account, sample_mailbox, make_gmail_server, sync_environment
):
    mailbox = small_mailbox(sample_mailbox, 40)
    server = make_gmail_server(mailbox, quota_units_per_second=TEST_QUOTA_UNITS_PER_SECOND)
    sync_environment(server)
    emails = EmailRepository(firestore_client)
    assert run_sync(account.provider_user_id).mode is SyncMode.BACKFILL

    known = all_ids(mailbox)
    new_raws = [
        m.raw for m in sample_mailbox.newest_first() if m.raw not in {k.raw for k in mailbox.newest_first()}
    ]
    added = {server.add_message(raw) for raw in new_raws[:3]}
    server.reset_stats()
    incremental = run_sync(account.provider_user_id, trigger="schedule")
    assert incremental.mode is SyncMode.INCREMENTAL and incremental.emails_stored == 3
    calls = server.stats.requests_by_method
    assert calls.get("messages.get") == 3 and calls.get("history.list") == 1 and "messages.list" not in calls
    assert set(emails.list_ids(account.provider_user_id)) == known | added

    server.reset_stats()
    idle = run_sync(account.provider_user_id, trigger="schedule")
    assert idle.mode is SyncMode.INCREMENTAL and idle.emails_processed == 0
    assert server.stats.requests_by_method == {"history.list": 1}  # an idle user costs one history call

    mailbox.expire_history_before(mailbox.history_id + 1)
    server.reset_stats()
    fallback = run_sync(account.provider_user_id, trigger="schedule")
    assert fallback.fell_back_to_backfill and fallback.mode is SyncMode.BACKFILL
    calls = server.stats.requests_by_method
    assert calls.get("history.list") == 1  # one 404, then one backfill: no loop
    assert (
        calls.get("messages.get", 0) <= 2 * len(added) + 40
    )  # only the window probes; nothing re-downloaded
    assert emails.count(account.provider_user_id) == len(known) + 3
    state = SyncStateRepository(firestore_client).get(account.provider_user_id)
    assert state.backfill_completed and int(state.last_history_id or 0) == mailbox.history_id


# ------------------------------------------------------------------------------------------ look-back


def mailbox_with_ages(sample_mailbox: Mailbox, ages: list[timedelta]) -> Mailbox:
    mailbox = Mailbox()
    now = datetime.now(UTC)
    for message, age in zip(sample_mailbox.newest_first(), ages, strict=False):
        mailbox.add_message(message.raw, internal_date_ms=int((now - age).timestamp() * 1000))
    return mailbox


def test_lookback_of_two_weeks_stores_only_newer_messages_and_empty_weeks_are_jumped(
    firestore_client, account, sample_mailbox, fast_gmail, sync_environment
):
    ages = [timedelta(days=d) for d in (0, 1, 5, 13, 20, 60, 200, 400, 1100)]
    whole = seed_account(
        firestore_client, provider_user_id="pu-whole", family_id="family-whole", token="whole-token"
    )
    fast_gmail.add_mailbox(whole.token, mailbox_with_ages(sample_mailbox, ages))
    fast_gmail.add_mailbox(account.token, bounded_mailbox := mailbox_with_ages(sample_mailbox, ages))
    sync_environment(fast_gmail)
    emails = EmailRepository(firestore_client)

    run_sync(whole.provider_user_id)  # no look-back: the whole mailbox, about 157 weeks
    assert emails.count(whole.provider_user_id) == len(ages)
    weeks_spanned = 1100 // 7
    assert fast_gmail.stats.requests_by_method["messages.list"] < weeks_spanned / 5

    sync_environment(fast_gmail, EMAILSYNC_LOOKBACK_WEEKS="2")
    summary = run_sync(account.provider_user_id)
    newer = {
        m.id for m, age in zip(bounded_mailbox.newest_first(), ages, strict=True) if age < timedelta(weeks=2)
    }
    assert set(emails.list_ids(account.provider_user_id)) == newer and len(newer) == 4
    assert summary.emails_total_estimate == 4
