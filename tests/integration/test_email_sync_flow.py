"""The `email_sync` flow end to end: real Firestore emulator, real local Gmail API server over HTTP,
real local enrichment, real Prefect API (one temporary server per session)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from google.cloud import firestore

from emailsync.config import get_settings
from emailsync.firestore.progress import ProgressWriter
from emailsync.firestore.repositories import EmailRepository, SyncStateRepository
from emailsync.gmail.server import GmailApiServer
from emailsync.models import SyncProgress, SyncStatus
from emailsync.seed import SeededAccount, seed_account
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


def progress_docs(client: firestore.Client, provider_user_id: str) -> list[SyncProgress]:
    query = client.collection("syncProgress").where(
        filter=firestore.FieldFilter("providerUserId", "==", provider_user_id)
    )
    return [SyncProgress.from_firestore(snapshot.to_dict()) for snapshot in query.stream()]


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
    assert all(isinstance(doc["embedding"], firestore.Vector) and len(doc["embedding"]) == 384 for doc in stored)
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
