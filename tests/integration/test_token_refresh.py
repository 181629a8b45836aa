"""Access tokens as Google issues them: short-lived, refreshed with the stored grant mid-sync, written
back to providerCredentials, and never in a log line. Real emulator, the local Gmail server's OAuth
endpoints over HTTP, real flows on the session's Prefect API."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
from prefect.logging.configuration import setup_logging
from prefect.logging.handlers import APILogHandler

from emailsync.config import get_settings
from emailsync.firestore.users import CredentialsRepository
from emailsync.gmail.client import GmailClient
from emailsync.models import ProviderCredentials, SyncMode, SyncStatus
from tests.fixtures.accounts import (
    CLIENT_SECRET,
    grant_credentials,
    issued_access_tokens,
    mailbox_of,
    run_sync,
    seed_connected,
    wait_for,
)
from tests.fixtures.firestore import progress_docs

pytestmark = [pytest.mark.integration, pytest.mark.prefect]


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
