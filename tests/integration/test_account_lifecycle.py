"""A Gmail account's life as Google and users live it: short-lived access tokens refreshed mid-sync, a
revoked grant, reconnecting, disconnecting mid-backfill, purging. Real Firestore emulator, the local
Gmail server over HTTP with its OAuth endpoints, real flows on the session's Prefect API."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any
from uuid import UUID

import pytest
from google.cloud import firestore
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
from prefect.logging.configuration import setup_logging
from prefect.logging.handlers import APILogHandler

from deployments.disconnect import DisconnectHandler
from deployments.watcher import GmailConnectWatcher, InProcessLauncher
from emailsync.config import get_settings
from emailsync.errors import AuthorizationRevokedError, GmailDisconnectedError
from emailsync.firestore.repositories import (
    CredentialsRepository,
    EmailRepository,
    ProviderUserRepository,
    SyncStateRepository,
)
from emailsync.gmail.client import GmailClient
from emailsync.local.gmail_server.server import GmailApiServer
from emailsync.local.mailbox import Mailbox, read_mbox
from emailsync.local.seed import connect_gmail, disconnect_gmail, seed_account
from emailsync.models import EmailRecord, ProviderCredentials, SyncMode, SyncProgress, SyncStatus
from flows.periodic_sync import periodic_email_sync
from tests.fixtures.firestore import progress_docs
from tests.fixtures.gmail import REPO_ROOT, SAMPLE_MBOX
from tests.fixtures.prefect import PrefectTestServer

pytestmark = [pytest.mark.integration, pytest.mark.prefect]

CLIENT_ID = "emailsync-test.apps.googleusercontent.com"
CLIENT_SECRET = "test-client-secret-x7"
RECONNECT_MESSAGE = "reconnect Gmail"


@cache
def _sample_raws() -> tuple[bytes, ...]:
    return tuple(read_mbox(SAMPLE_MBOX))


def mailbox_of(size: int) -> Mailbox:
    return Mailbox.from_raw_messages(_sample_raws()[:size], shift_dates=True)


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return value


def completed_docs(client: firestore.Client, provider_user_id: str) -> list[SyncProgress]:
    return [doc for doc in progress_docs(client, provider_user_id) if doc.status is SyncStatus.COMPLETED]


def run_sync(provider_user_id: str, **kwargs: Any):  # -> SyncSummary
    from flows.email_sync import email_sync

    return email_sync(provider_user_id, **kwargs)


def grant_credentials(server: GmailApiServer, user: str) -> ProviderCredentials:
    """What the app stores at the end of Google's consent flow: a refresh token, the first access token."""
    grant = server.issue_grant(user, client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    return ProviderCredentials(
        token=grant.access_token,
        refresh_token=grant.refresh_token,
        token_uri=server.token_uri,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        scopes=grant.scopes,
        expiry=grant.expiry,
    )


def revoke_at_google(server: GmailApiServer, token: str) -> None:
    """The user removes the app's access in their Google account (Google's revoke endpoint)."""
    request = urllib.request.Request(f"{server.url}revoke?token={token}", data=b"", method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


def issued_access_tokens(server: GmailApiServer) -> set[str]:
    return set(server.oauth._access_tokens)


@pytest.fixture
def lifecycle_env(
    monkeypatch: pytest.MonkeyPatch, prefect_server: PrefectTestServer, firestore_client: firestore.Client
) -> Iterator[Callable[..., None]]:
    """Point this process's settings at a Gmail server: `lifecycle_env(server, **env)`."""

    def configure(server: GmailApiServer, **env: str) -> None:
        monkeypatch.setenv("GMAIL_API_ENDPOINT", server.url)
        monkeypatch.setenv("EMAILSYNC_QUOTA_UNITS_PER_SECOND", str(server.quota_units_per_second or 5000))
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        get_settings.cache_clear()

    yield configure
    get_settings.cache_clear()


def seed_connected(
    client: firestore.Client, server: GmailApiServer, provider_user_id: str, mailbox: Mailbox
) -> ProviderCredentials:
    server.add_mailbox(provider_user_id, mailbox)  # the Gmail user behind the grant
    seed_account(client, provider_user_id=provider_user_id, gmail_active=True)
    credentials = grant_credentials(server, provider_user_id)
    CredentialsRepository(client).put(provider_user_id, credentials)
    return credentials


class EveryLogLine(logging.Handler):
    """Every record of every logger, at DEBUG, formatted with its arguments and traceback."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def every_log_line() -> Iterator[EveryLogLine]:
    setup_logging()  # Prefect configures logging at its first run; done later, it would drop our handler
    handler = EveryLogLine()
    loggers = [logging.getLogger()] + [
        logger for logger in logging.root.manager.loggerDict.values() if isinstance(logger, logging.Logger)
    ]
    levels = [(logger, logger.level) for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.DEBUG)
    for logger in loggers:
        if logger is logging.getLogger() or not logger.propagate:
            logger.addHandler(handler)
    try:
        yield handler
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
        for logger, level in levels:
            logger.setLevel(level)


# ------------------------------------------------------------------------------------------ refresh


def test_tokens_expiring_every_5s_are_refreshed_mid_sync_the_newest_is_persisted_and_none_is_ever_logged(
    firestore_client, make_gmail_server, lifecycle_env, every_log_line
):
    mailbox = mailbox_of(90)
    # 60 units/s = 12 messages/s: the sync outlives several 5-second access tokens.
    server = make_gmail_server(mailbox, quota_units_per_second=60, access_token_ttl_seconds=5)
    lifecycle_env(server, EMAILSYNC_BATCH_SIZE="30")
    first = seed_connected(firestore_client, server, "pu-refresh", mailbox)

    summary = run_sync("pu-refresh")

    assert summary.emails_stored == len(mailbox) and summary.mode is SyncMode.BACKFILL
    assert server.stats.token_refreshes >= 2
    assert summary.timings.wall_seconds > 5  # so at least one refresh was of a token issued mid-sync
    stored = CredentialsRepository(firestore_client).get("pu-refresh")
    newest = max(server.oauth._access_tokens.items(), key=lambda item: item[1].expires_at)[0]
    assert stored.token == newest and stored.token != first.token
    assert stored.expiry is not None and stored.expiry > first.expiry
    assert stored.refresh_token == first.refresh_token and stored.client_secret == CLIENT_SECRET
    [doc] = progress_docs(firestore_client, "pu-refresh")
    assert doc.status is SyncStatus.COMPLETED

    # Every log line of the sync, ours and the libraries' at DEBUG, and every log Prefect kept of the run.
    APILogHandler().flush()  # the run's logs still queued for the API are sent
    flow_run_id = UUID(doc.details.model_dump(by_alias=True)["flowRunId"])

    def prefect_logs() -> list[str]:
        with get_client(sync_client=True) as client:
            logs = client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])), limit=200
            )
        return [log.message for log in logs]

    run_logs = wait_for(prefect_logs, timeout=15, what="the flow run's logs in the Prefect API")
    secrets = {*issued_access_tokens(server), first.refresh_token, CLIENT_SECRET}
    assert len(secrets) >= 4
    lines = every_log_line.lines + run_logs + [doc.model_dump_json()]
    assert any("token refreshed" in line for line in every_log_line.lines)
    assert len(every_log_line.lines) > 100  # DEBUG of every logger was really captured
    leaks = [line for line in lines for secret in secrets if secret in line]
    assert not leaks, f"{len(leaks)} log lines carry a token, e.g. {leaks[0][:300]}"


def test_a_401_for_a_token_believed_valid_is_refreshed_and_retried_for_single_calls_and_batch_parts(
    make_gmail_server,
):
    mailbox = mailbox_of(30)
    server = make_gmail_server(mailbox, quota_units_per_second=0, access_token_ttl_seconds=1)
    settings = get_settings().model_copy(
        update={"gmail_api_endpoint": server.url, "quota_units_per_second": 5000}
    )
    ids = [message.id for message in mailbox.newest_first()]
    saved: list[ProviderCredentials] = []

    def client_believing_its_token_valid() -> GmailClient:
        # What we stored says one more hour; the server expired the access token after 1 s.
        stale = grant_credentials(server, "pu-401")
        stale.expiry = datetime.now(UTC) + timedelta(hours=1)
        time.sleep(1.2)
        return GmailClient(stale, settings, on_token_refresh=lambda fresh, _used: saved.append(fresh))

    single = client_believing_its_token_valid()
    assert single.get_profile().messages_total == len(mailbox)  # 401 → refresh → the call again
    batch = client_believing_its_token_valid()
    assert len(batch.get_messages(ids)) == len(mailbox)  # every part 401 → one refresh → the parts again

    assert single.stats.token_refreshes == batch.stats.token_refreshes == 1 and len(saved) == 2
    assert saved[0].token != saved[1].token and all(fresh.expiry for fresh in saved)


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
        assert sweep.users == 0 and not sweep.completed and not sweep.failed
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
