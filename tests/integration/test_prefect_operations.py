"""What an operator sees in Prefect, and what the web app sees when the operator acts there: a failed
run retried from the Prefect UI resumes in the same progress document; the domain's log lines, run
names, tags and the end-of-run artifact are in Prefect; the failure automation is installed and fires.

Real Firestore emulator, real local Gmail server over HTTP, real Prefect API (the session's server).
A retried run is executed in this process by `prefect.flow_engine.run_flow`, the function a worker's
or `serve`'s subprocess calls for a run it picked up.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from uuid import UUID

import pytest
from google.cloud import firestore
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.client.schemas.objects import StateType
from prefect.flow_engine import run_flow
from prefect.states import AwaitingRetry

from emailsync.config import get_settings
from emailsync.firestore.emails import EmailRepository
from emailsync.firestore.users import CredentialsRepository
from emailsync.local.gmail_server.server import GmailApiServer
from emailsync.local.mailbox import Mailbox
from emailsync.local.seed import SeededAccount, seed_account
from emailsync.models import ProviderCredentials
from tests.fixtures.prefect import PrefectTestServer

pytestmark = [pytest.mark.integration, pytest.mark.prefect]

FAST_QUOTA = 2500  # units/s: the quota is not what these tests wait for


@pytest.fixture
def gmail_env(
    monkeypatch: pytest.MonkeyPatch, firestore_client: firestore.Client, prefect_server: PrefectTestServer
) -> Iterator[Callable[..., None]]:
    """Point the flow (through get_settings) at a Gmail server: `gmail_env(server, **env)`."""

    def configure(server: GmailApiServer, **env: str) -> None:
        monkeypatch.setenv("GMAIL_API_ENDPOINT", server.url)
        monkeypatch.setenv("EMAILSYNC_QUOTA_UNITS_PER_SECOND", str(FAST_QUOTA))
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        get_settings.cache_clear()

    yield configure
    get_settings.cache_clear()


def small_mailbox(sample_mailbox: Mailbox, count: int) -> Mailbox:
    messages = sample_mailbox.newest_first()
    step = len(messages) // count
    return Mailbox.from_raw_messages([messages[i * step].raw for i in range(count)], shift_dates=True)


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
    return result


def progress_of(client: firestore.Client, sync_id: str) -> dict[str, Any]:
    return client.collection("syncProgress").document(sync_id).get().to_dict() or {}


class ProgressRecorder:
    """Every snapshot of one syncProgress document, as the web app's subscription sees them."""

    def __init__(self, client: firestore.Client, sync_id: str) -> None:
        self.snapshots: list[dict[str, Any]] = []
        self._watch = client.collection("syncProgress").document(sync_id).on_snapshot(self._on_snapshot)

    def _on_snapshot(self, documents: list[Any], _changes: Any, _read_time: Any) -> None:
        self.snapshots.extend(document.to_dict() for document in documents if document.exists)

    def close(self) -> None:
        self._watch.unsubscribe()


def start_flow_run(provider_user_id: str, sync_id: str) -> UUID:
    """A flow run of `email-sync` with the parameters the watcher passes (its sync id included)."""
    from flows.email_sync import email_sync

    with get_client(sync_client=True) as client:
        flow_run = client.create_flow_run(
            email_sync,
            parameters={"provider_user_id": provider_user_id, "trigger": "manual", "sync_id": sync_id},
        )
    return flow_run.id


def execute(flow_run_id: UUID) -> Any:
    """What a worker does with a run it picked up: run the flow for that flow run, with its parameters."""
    from flows.email_sync import email_sync

    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(flow_run_id)
    return run_flow(email_sync, flow_run=flow_run, parameters=flow_run.parameters)


def read_flow_run(flow_run_id: UUID) -> Any:
    with get_client(sync_client=True) as client:
        return client.read_flow_run(flow_run_id)


# ------------------------------------------------------------------------------------------ UI retry


def test_a_failed_run_retried_from_the_prefect_ui_resumes_from_its_checkpoint_in_the_same_progress_document(
    firestore_client, sample_mailbox, make_gmail_server, gmail_env
):
    account = seed_account(
        firestore_client, provider_user_id="pu-retry", token="retry-token", gmail_active=True
    )
    mailbox = small_mailbox(sample_mailbox, 80)
    server = make_gmail_server(mailbox, quota_units_per_second=FAST_QUOTA)
    gmail_env(server, EMAILSYNC_BATCH_SIZE="10")
    emails = EmailRepository(firestore_client)
    sync_id = "sync-pu-retry-ui"
    flow_run_id = start_flow_run(account.provider_user_id, sync_id)

    # Mid-backfill the user revokes access: the run fails with 20+ of 80 messages stored.
    def revoke_mid_backfill() -> None:
        wait_for(lambda: emails.count(account.provider_user_id) >= 20, 120, "20 stored messages")
        server.pause()
        server.revoke("retry-token")
        server.resume()

    revoker = threading.Thread(target=revoke_mid_backfill, daemon=True)
    revoker.start()
    with pytest.raises(Exception, match="revoked"):
        execute(flow_run_id)
    revoker.join(timeout=30)
    failed = progress_of(firestore_client, sync_id)
    assert failed["status"] == "failed" and "Gmail authorization revoked" in failed["error"]
    assert 0 < failed["progress"] < 100
    stored_before = emails.count(account.provider_user_id)
    assert 20 <= stored_before < len(mailbox)
    assert read_flow_run(flow_run_id).state.type is StateType.FAILED

    # The user reconnects Gmail; the operator presses "Retry" on the failed run in the Prefect UI, which
    # sets it to AwaitingRetry (forced), and a worker runs it again with the same parameters.
    CredentialsRepository(firestore_client).put(
        account.provider_user_id, ProviderCredentials(token="retry-token-reconnected")
    )
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(flow_run_id, AwaitingRetry(message="Retry from the UI"), force=True)
    gets_before = server.stats.requests_by_method.get("messages.get", 0)
    recorder = ProgressRecorder(firestore_client, sync_id)
    try:
        summary = execute(flow_run_id)
        wait_for(
            lambda: recorder.snapshots and recorder.snapshots[-1]["status"] == "completed", 30, "completed"
        )
    finally:
        recorder.close()

    assert read_flow_run(flow_run_id).state.type is StateType.COMPLETED
    assert read_flow_run(flow_run_id).run_count == 2
    assert summary.sync_id == sync_id and summary.resumed and summary.attempt == 2
    final = progress_of(firestore_client, sync_id)
    assert (final["status"], final["progress"], final["error"]) == ("completed", 100, None)
    assert final["details"]["attempt"] == 2 and "revoked" in final["details"]["previousError"]
    assert final["details"]["emailsProcessed"] == len(mailbox)
    # The web app saw the same document reopen and climb from where the failed attempt stopped.
    statuses = [snapshot["status"] for snapshot in recorder.snapshots]
    assert "pending" in statuses or "in_progress" in statuses
    percents = [snapshot["progress"] for snapshot in recorder.snapshots]
    assert percents == sorted(percents) and percents[0] >= failed["progress"]
    # Resumed from the checkpoint: only what the failed attempt had not stored was downloaded.
    assert emails.count(account.provider_user_id) == len(mailbox)
    assert (
        server.stats.requests_by_method.get("messages.get", 0) - gets_before
        <= len(mailbox) - stored_before + 10
    )


# ------------------------------------------------------------------------------------------ logs


def test_emailsync_log_lines_run_name_tags_and_the_end_of_run_artifact_are_in_prefect(
    firestore_client, sample_mailbox, make_gmail_server, gmail_env
):
    account = seed_account(
        firestore_client, provider_user_id="pu-logs", token="logs-token", gmail_active=True
    )
    mailbox = small_mailbox(sample_mailbox, 30)
    server = make_gmail_server(mailbox, quota_units_per_second=FAST_QUOTA, fail_rate=0.15, seed=7)
    gmail_env(server)
    flow_run_id = start_flow_run(account.provider_user_id, "sync-pu-logs")

    summary = execute(flow_run_id)

    assert summary.gmail_retries > 0 and server.stats.errors_injected > 0
    flow_run = read_flow_run(flow_run_id)
    assert flow_run.name == "email-sync-pu-logs-manual-backfill"
    assert {"user:pu-logs", "trigger:manual", "mode:backfill"} <= set(flow_run.tags)

    def emailsync_logs() -> list[Any]:
        with get_client(sync_client=True) as client:
            logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
        return [log for log in logs if log.name.startswith("emailsync.")]

    logs = wait_for(emailsync_logs, 30, "emailsync log lines in the flow run's logs")
    assert any(log.name == "emailsync.gmail.retry" and "gmail retry" in log.message for log in logs)

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    [table] = [artifact for artifact in artifacts if artifact.type == "table"]
    data = table.data if isinstance(table.data, list) else json.loads(table.data)
    rows = {row["figure"]: row["value"] for row in data}
    assert rows["outcome"] == "completed" and rows["emails stored"] == len(mailbox)
    assert rows["Gmail retries"] == summary.gmail_retries > 0
    for figure in ("Gmail 429 answers", "skipped: already stored", "failed: vanished before download (404)"):
        assert figure in rows


# ------------------------------------------------------------------------------------------ automation


class WebhookRecorder:
    """A local HTTP endpoint standing in for the operator's Slack/webhook: records every POST body."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                recorder.bodies.append(json.loads(self.rfile.read(length) or b"{}"))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alert"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook() -> Iterator[WebhookRecorder]:
    recorder = WebhookRecorder()
    yield recorder
    recorder.close()


def test_the_failure_automation_exists_after_install_and_notifies_on_a_failed_email_sync_run(
    firestore_client, gmail_server, gmail_env, webhook
):
    from deployments.automations import FAILED_SYNC_AUTOMATION, install_automations

    account: SeededAccount = seed_account(
        firestore_client, provider_user_id="pu-alert", token="alert-token", gmail_active=True
    )
    gmail_env(gmail_server)
    install_automations(webhook.url)
    automation_id = install_automations(webhook.url)  # installing twice keeps one definition
    try:
        with get_client(sync_client=True) as client:
            [automation] = client.read_automations_by_name(FAILED_SYNC_AUTOMATION)
        assert automation.id == automation_id and automation.enabled
        assert automation.trigger.expect == {"prefect.flow-run.Failed", "prefect.flow-run.Crashed"}
        assert [action.type for action in automation.actions] == ["send-notification"]

        gmail_server.revoke("alert-token")
        flow_run_id = start_flow_run(account.provider_user_id, "sync-pu-alert")
        with pytest.raises(Exception, match="revoked"):
            execute(flow_run_id)

        flow_run = read_flow_run(flow_run_id)
        [alert] = wait_for(
            lambda: [body for body in webhook.bodies if flow_run.name in body.get("text", "")],
            90,
            "the automation's notification",
        )
        assert "Failed" in alert["text"] and "user:pu-alert" in alert["text"]
    finally:
        with get_client(sync_client=True) as client:
            client.delete_automation(automation_id)
