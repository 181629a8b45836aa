"""A Gmail account's life as Google and users live it: a revoked grant, reconnecting, disconnecting
mid-backfill, purging (token refresh: test_token_refresh.py). Real Firestore emulator, the local
Gmail server over HTTP with its OAuth endpoints, real flows on the session's Prefect API."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta

import pytest

from deployments.disconnect import DisconnectHandler
from deployments.watcher import GmailConnectWatcher, InProcessLauncher
from emailsync.errors import AuthorizationRevokedError, GmailDisconnectedError
from emailsync.firestore.emails import EmailRepository
from emailsync.firestore.sync_state import SyncStateRepository
from emailsync.firestore.users import CredentialsRepository, ProviderUserRepository
from emailsync.local.seed import connect_gmail, disconnect_gmail, seed_account
from emailsync.models import EmailRecord, SyncMode, SyncStatus
from emailsync.sweep import Outcome, Reason
from flows.periodic_sync import periodic_email_sync
from tests.fixtures.accounts import (
    RECONNECT_MESSAGE,
    completed_docs,
    grant_credentials,
    mailbox_of,
    revoke_at_google,
    run_sync,
    seed_connected,
    wait_for,
)
from tests.fixtures.firestore import progress_docs
from tests.fixtures.gmail import REPO_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.prefect]


# ------------------------------------------------------------------------------------------ revoke


def test_revoked_grant_fails_one_sync_asking_to_reconnect_then_is_left_alone_until_the_user_reconnects(
    firestore_client, make_gmail_server, lifecycle_env
):
    mailbox = mailbox_of(8)
    server = make_gmail_server(mailbox, quota_units_per_second=0, access_token_ttl_seconds=5)
    lifecycle_env(server)
    credentials = seed_connected(firestore_client, server, "pu-revoked", mailbox)
    users = ProviderUserRepository(firestore_client)
    revoke_at_google(server, credentials.refresh_token)

    with pytest.raises(AuthorizationRevokedError):
        run_sync("pu-revoked", trigger="schedule")
    [failed] = progress_docs(firestore_client, "pu-revoked")
    assert failed.status is SyncStatus.FAILED and RECONNECT_MESSAGE in (failed.error or "")
    assert credentials.refresh_token not in (failed.error or "")
    assert users.get("pu-revoked").services.gmail.needs_reauth is True

    # The hourly sweep, twice: nothing starts for this user, no new document.
    for _ in range(2):
        sweep = periodic_email_sync()
        assert [(o.provider_user_id, o.outcome, o.reason) for o in sweep.outcomes] == [
            ("pu-revoked", Outcome.SKIPPED, Reason.NEEDS_REAUTH)
        ]
    assert [doc.syncId for doc in progress_docs(firestore_client, "pu-revoked")] == [failed.syncId]

    watcher = GmailConnectWatcher(firestore_client, launcher=InProcessLauncher(max_workers=1))
    watcher.start()
    try:
        # The watcher's restart catch-up leaves the flagged user alone too.
        [catch_up] = watcher.wait_for_decisions(1)
        assert catch_up.action == "skipped" and "reconnect" in catch_up.reason
        # The user reconnects: a new consent (new grant, new credentials), Gmail switched off and on.
        disconnect_gmail(firestore_client, "pu-revoked")
        CredentialsRepository(firestore_client).put("pu-revoked", grant_credentials(server, "pu-revoked"))
        connect_gmail(firestore_client, "pu-revoked")
        completed = wait_for(
            lambda: completed_docs(firestore_client, "pu-revoked"),
            timeout=90,
            what="the sync after the reconnect",
        )
    finally:
        watcher.stop(wait=True)
    assert users.get("pu-revoked").services.gmail.needs_reauth is False
    assert completed[0].details.model_dump(by_alias=True)["emailsProcessed"] == len(mailbox)
    assert EmailRepository(firestore_client).count("pu-revoked") == len(mailbox)
    statuses = [doc.status for doc in progress_docs(firestore_client, "pu-revoked")]
    assert statuses == [SyncStatus.FAILED, SyncStatus.COMPLETED]


# ------------------------------------------------------------------------------------------ disconnect


def test_disconnect_mid_backfill_stops_the_sync_within_one_batch_and_its_document_says_so(
    firestore_client, make_gmail_server, lifecycle_env
):
    mailbox = mailbox_of(80)
    batch = 10
    server = make_gmail_server(mailbox, quota_units_per_second=100)
    lifecycle_env(server, EMAILSYNC_BATCH_SIZE=str(batch))
    seed_connected(firestore_client, server, "pu-leaving", mailbox)
    emails = EmailRepository(firestore_client)
    outcome: list[BaseException | object] = []

    def sync() -> None:
        try:
            outcome.append(run_sync("pu-leaving", trigger="connect"))
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=sync)
    worker.start()
    wait_for(lambda: emails.count("pu-leaving") >= 2 * batch, timeout=90, what="two stored batches")
    disconnect_gmail(firestore_client, "pu-leaving")
    stored_at_disconnect = emails.count("pu-leaving")
    worker.join(timeout=60)

    assert not worker.is_alive() and isinstance(outcome[0], GmailDisconnectedError)
    # The batch being stored when the user disconnected may land; nothing after it.
    stored = emails.count("pu-leaving")
    assert stored <= stored_at_disconnect + 2 * batch and stored < len(mailbox)
    [doc] = progress_docs(firestore_client, "pu-leaving")
    assert doc.status is SyncStatus.FAILED and doc.progress < 100
    assert doc.error and doc.error.startswith("Gmail was disconnected; sync stopped")
    state = SyncStateRepository(firestore_client).get("pu-leaving")
    assert state.active_sync_id is None and state.backfill_cursor is not None  # kept (policy keep)

    # With `keep`, a reconnect resumes the backfill where it stopped: what was stored is not fetched again.
    connect_gmail(firestore_client, "pu-leaving")
    server.configure(quota_units_per_second=0)
    lifecycle_env(server, EMAILSYNC_BATCH_SIZE=str(batch), EMAILSYNC_QUOTA_UNITS_PER_SECOND="5000")
    resumed = run_sync("pu-leaving")
    assert resumed.resumed and emails.count("pu-leaving") == len(mailbox)
    assert resumed.emails_fetched <= len(mailbox) - stored + batch


# ------------------------------------------------------------------------------------------ purge


def synthetic_emails(count: int) -> list[EmailRecord]:
    return [
        EmailRecord(message_id=f"m{n:05d}", subject=f"message {n}", app_user_id="family-demo-member-1")
        for n in range(count)
    ]


def test_purge_killed_halfway_resumes_and_removes_emails_sync_state_and_credentials(
    firestore_client, tmp_path
):
    seed_account(firestore_client, provider_user_id="pu-purge", gmail_active=False)
    emails = EmailRepository(firestore_client)
    total = 600
    emails.upsert_many("pu-purge", synthetic_emails(total))
    SyncStateRepository(firestore_client).complete_backfill("pu-purge", "12345")
    command = [sys.executable, "-m", "emailsync.cli", "purge", "pu-purge", "--batch-size", "10"]

    with (tmp_path / "purge.log").open("wb") as log:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=dict(os.environ), stdout=log, stderr=log)
        try:
            wait_for(
                lambda: process.poll() is not None or emails.count("pu-purge") <= total // 2,
                timeout=60,
                what="the purge to be halfway",
            )
            assert process.poll() is None, (tmp_path / "purge.log").read_text()
            process.send_signal(signal.SIGKILL)
        finally:
            process.wait(timeout=30)
    left = emails.count("pu-purge")
    assert 0 < left < total
    assert SyncStateRepository(firestore_client).get("pu-purge").model_extra.get("purgePending") is True

    for _ in range(2):  # resumed, then run again on nothing: idempotent
        rerun = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
        assert rerun.returncode == 0, rerun.stderr
    assert "0 emails deleted" in rerun.stdout

    assert emails.count("pu-purge") == 0
    assert not firestore_client.collection("providerCredentials").document("pu-purge").get().exists
    assert not firestore_client.collection("syncState").document("pu-purge").get().exists
    assert ProviderUserRepository(firestore_client).get("pu-purge") is not None  # the account itself stays


def test_purge_of_a_connected_user_is_refused_with_one_line(firestore_client):
    seed_account(firestore_client, provider_user_id="pu-still-here", gmail_active=True)
    command = [sys.executable, "-m", "emailsync.cli", "purge", "pu-still-here"]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "connected" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert firestore_client.collection("providerCredentials").document("pu-still-here").get().exists


def test_disconnect_with_purge_policy_removes_the_mail_and_a_reconnect_starts_a_fresh_backfill(
    firestore_client, make_gmail_server, lifecycle_env
):
    mailbox = mailbox_of(12)
    server = make_gmail_server(mailbox, quota_units_per_second=0)
    lifecycle_env(server, EMAILSYNC_ON_DISCONNECT="purge")
    seed_connected(firestore_client, server, "pu-purged", mailbox)
    emails = EmailRepository(firestore_client)
    credentials = firestore_client.collection("providerCredentials").document("pu-purged")
    push_stopped_with_credentials: list[bool] = []  # the push hook runs before the purge deletes them
    assert DisconnectHandler(firestore_client).policy == "purge"  # EMAILSYNC_ON_DISCONNECT
    disconnects = DisconnectHandler(
        firestore_client,
        stop_push_watch=lambda user: push_stopped_with_credentials.append(credentials.get().exists),
    )
    watcher = GmailConnectWatcher(
        firestore_client, launcher=InProcessLauncher(max_workers=1), disconnects=disconnects
    )
    watcher.start()
    try:
        wait_for(lambda: emails.count("pu-purged") == len(mailbox), timeout=90, what="the catch-up backfill")
        wait_for(
            lambda: completed_docs(firestore_client, "pu-purged"),
            timeout=30,
            what="the catch-up sync to complete",
        )
        disconnect_gmail(firestore_client, "pu-purged")
        wait_for(
            lambda: (
                emails.count("pu-purged") == 0
                and not credentials.get().exists
                and not firestore_client.collection("syncState").document("pu-purged").get().exists
            ),
            timeout=30,
            what="the purge",
        )
        # Reconnecting (a new consent) after a purge starts from scratch: a full backfill.
        CredentialsRepository(firestore_client).put("pu-purged", grant_credentials(server, "pu-purged"))
        connect_gmail(firestore_client, "pu-purged", datetime.now(UTC) + timedelta(seconds=1))
        done = wait_for(
            lambda: completed_docs(firestore_client, "pu-purged")[1:],
            timeout=90,
            what="the sync after the reconnect",
        )
    finally:
        watcher.stop(wait=True)
    assert push_stopped_with_credentials == [True]
    assert done[0].details.mode is SyncMode.BACKFILL
    assert emails.count("pu-purged") == len(mailbox)
