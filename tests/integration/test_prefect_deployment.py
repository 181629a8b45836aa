"""The production path on one machine: a real Prefect server, prefect.yaml deployed on a process work
pool, one `prefect worker` subprocess; a Gmail connect through the watcher becomes a flow run of
`email-sync/email-sync` on that worker, and the user's syncProgress ends completed; so does a Gmail
push notification's sync."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import requests
from google.cloud import firestore

from deployments.push import PushSyncRunner
from deployments.serve import PrefectServerProcess
from deployments.watcher import DeploymentLauncher, GmailConnectWatcher
from emailsync.deployment_specs import EMAIL_SYNC_DEPLOYMENT
from emailsync.firestore.emails import EmailRepository
from emailsync.local.firestore_emulator import FirestoreEmulator
from emailsync.local.gmail_server.server import GmailApiServer
from emailsync.local.mailbox import Mailbox, read_mbox
from emailsync.local.seed import connect_gmail, seed_account
from emailsync.models import SyncProgress, SyncStatus, SyncTrigger
from emailsync.push.coalesce import RunOutcome
from tests.fixtures.gmail import SAMPLE_MBOX

pytestmark = [pytest.mark.integration, pytest.mark.prefect]

REPO_ROOT = Path(__file__).resolve().parents[2]
POOL = "emailsync-pool"
SYNC_TIMEOUT = 150.0
MAILBOX_SIZE = 20
FINISHED_STATE_TYPES = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def _small_mailbox(size: int) -> Mailbox:
    return Mailbox.from_raw_messages(read_mbox(SAMPLE_MBOX)[:size])


def _wait_for_terminal_progress(client: firestore.Client, provider_user_id: str) -> SyncProgress:
    deadline = time.monotonic() + SYNC_TIMEOUT
    while time.monotonic() < deadline:
        docs = [
            SyncProgress.from_firestore(s.to_dict())
            for s in client.collection(SyncProgress.COLLECTION).stream()
            if (s.to_dict() or {}).get("providerUserId") == provider_user_id
        ]
        if docs and docs[0].status.terminal:
            return docs[0]
        time.sleep(0.5)
    raise AssertionError(f"no finished sync for {provider_user_id} within {SYNC_TIMEOUT}s")


def _finished_flow_run(api_url: str, flow_run_id: str) -> dict[str, Any]:
    """The flow run once Prefect reports it finished: the sync's last progress write comes before the
    flow run's own final state, so right after seeing it `completed` the run may still be RUNNING."""
    deadline = time.monotonic() + SYNC_TIMEOUT
    while True:
        flow_run = requests.get(f"{api_url}/flow_runs/{flow_run_id}", timeout=10).json()
        if flow_run["state_type"] in FINISHED_STATE_TYPES or time.monotonic() > deadline:
            return flow_run
        time.sleep(0.5)


def test_connect_runs_the_email_sync_deployment_on_a_process_worker(
    firestore_client: firestore.Client,
    firestore_emulator: FirestoreEmulator,
    gmail_server: GmailApiServer,
    tmp_path: Path,
):
    gmail_server.configure(quota_units_per_second=0)  # unlimited: this test is about orchestration
    gmail_server.add_mailbox("token-deployed", _small_mailbox(MAILBOX_SIZE))
    seed_account(firestore_client, provider_user_id="pu-deployed", token="token-deployed")
    flow_env = {
        **firestore_emulator.environ("omnibutler-test"),
        "GMAIL_API_ENDPOINT": gmail_server.url,
        "EMAILSYNC_HOME": str(REPO_ROOT),  # the pull step's working directory on the worker
    }
    with PrefectServerProcess(tmp_path / "prefect-home") as server:
        server.cli("work-pool", "create", POOL, "--type", "process")
        server.cli("deploy", "--all", cwd=REPO_ROOT, extra_env=flow_env)
        server.cli("deployment", "schedule", "pause", "--all")  # the hourly fan-out stays out of this test
        server.start_worker(POOL, "worker-1", extra_env=flow_env)
        watcher = GmailConnectWatcher(firestore_client, launcher=DeploymentLauncher(api_url=server.api_url))
        watcher.start()
        try:
            connect_gmail(firestore_client, "pu-deployed")
            sync = _wait_for_terminal_progress(firestore_client, "pu-deployed")
        finally:
            watcher.stop(wait=True)
        assert sync.status == SyncStatus.COMPLETED, (
            f"{sync.error}\n{server.log_tail(name='worker-worker-1.log')}"
        )
        assert sync.details.flow_run_id
        flow_run = _finished_flow_run(server.api_url, sync.details.flow_run_id)
        deployment = requests.get(
            f"{server.api_url}/deployments/{flow_run['deployment_id']}", timeout=10
        ).json()

        # Gmail push in this setup: a notification's sync is a run of the same deployment, waited for
        # (so the next notification of the user coalesces behind it).
        pushed_id = gmail_server.add_message(read_mbox(SAMPLE_MBOX)[MAILBOX_SIZE], token="token-deployed")
        runner = PushSyncRunner(
            firestore_client, deployment_name=EMAIL_SYNC_DEPLOYMENT, api_url=server.api_url
        )
        push_outcome = runner("pu-deployed")

    assert sync.details.trigger == SyncTrigger.CONNECT
    assert flow_run["state_type"] == "COMPLETED"
    assert flow_run["parameters"]["sync_id"] == sync.syncId
    assert deployment["name"] == "email-sync"
    assert deployment["work_pool_name"] == POOL
    assert EmailRepository(firestore_client).count("pu-deployed") == MAILBOX_SIZE + 1
    assert push_outcome == RunOutcome.DONE
    assert pushed_id in EmailRepository(firestore_client).list_ids("pu-deployed")
    pushes = [
        SyncProgress.from_firestore(s.to_dict())
        for s in firestore_client.collection(SyncProgress.COLLECTION).stream()
        if ((s.to_dict() or {}).get("details") or {}).get("trigger") == SyncTrigger.PUSH.value
    ]
    assert [push.status for push in pushes] == [SyncStatus.COMPLETED]
