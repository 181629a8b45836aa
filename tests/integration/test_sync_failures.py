"""A sync that cannot run says why, where the app looks: a failed `syncProgress` document with the
reason, within seconds (real emulator, real Prefect API, the local Gmail server or none at all)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
from google.cloud import firestore

from emailsync.config import get_settings
from emailsync.errors import FatalError, ServiceUnreachableError
from emailsync.firestore.client import reset_clients
from emailsync.firestore.documents import PROVIDER_CREDENTIALS
from emailsync.local.processes import free_port
from emailsync.local.seed import SeededAccount, seed_account
from emailsync.models import SyncStatus
from tests.fixtures.firestore import progress_docs
from tests.fixtures.prefect import PrefectTestServer

pytestmark = [pytest.mark.integration, pytest.mark.prefect]


@pytest.fixture
def gmail_endpoint(
    monkeypatch: pytest.MonkeyPatch, prefect_server: PrefectTestServer, firestore_client: firestore.Client
) -> Iterator[Callable[[str], None]]:
    def configure(url: str) -> None:
        monkeypatch.setenv("GMAIL_API_ENDPOINT", url)
        get_settings.cache_clear()

    yield configure
    get_settings.cache_clear()


@pytest.fixture
def account(firestore_client: firestore.Client) -> SeededAccount:
    return seed_account(
        firestore_client, provider_user_id="pu-broken", token="broken-token", gmail_active=True
    )


def run_sync(provider_user_id: str):  # -> SyncSummary
    from flows.email_sync import email_sync

    return email_sync(provider_user_id)


def test_a_provider_user_without_credentials_gets_a_failed_document_with_the_reason(
    firestore_client: firestore.Client, account: SeededAccount, gmail_server, gmail_endpoint
):
    gmail_endpoint(gmail_server.url)
    firestore_client.collection(PROVIDER_CREDENTIALS).document(account.provider_user_id).delete()

    with pytest.raises(FatalError, match="no Gmail credentials"):
        run_sync(account.provider_user_id)

    [doc] = progress_docs(firestore_client, account.provider_user_id)
    assert doc.status is SyncStatus.FAILED and doc.appUserId == account.app_user_id
    assert "no Gmail credentials stored for provider user pu-broken" in (doc.error or "")


def test_an_unreachable_gmail_fails_the_sync_within_seconds_naming_the_endpoint(
    firestore_client: firestore.Client, account: SeededAccount, gmail_endpoint
):
    endpoint = f"http://127.0.0.1:{free_port()}"
    gmail_endpoint(endpoint)
    started = time.monotonic()

    with pytest.raises(ServiceUnreachableError):
        run_sync(account.provider_user_id)

    assert time.monotonic() - started < 15
    [doc] = progress_docs(firestore_client, account.provider_user_id)
    assert doc.status is SyncStatus.FAILED and doc.error == f"Gmail API at {endpoint} is unreachable"


def test_an_unreachable_firestore_fails_the_flow_within_seconds_naming_the_emulator(
    monkeypatch: pytest.MonkeyPatch, prefect_server: PrefectTestServer
):
    port = free_port()
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", f"127.0.0.1:{port}")
    get_settings.cache_clear()
    reset_clients()
    started = time.monotonic()
    try:
        with pytest.raises(
            ServiceUnreachableError, match=f"Firestore emulator at 127.0.0.1:{port} is unreachable"
        ):
            run_sync("pu-anyone")
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
        reset_clients()

    assert time.monotonic() - started < 15
