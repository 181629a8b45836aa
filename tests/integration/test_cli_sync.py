"""`emailsync sync` as an operator runs it: real processes, no PREFECT_API_URL (so the machine's shared
local Prefect server), the real emulator and the local Gmail server. Ten at once → one sync; a SIGKILL
inside the Prefect slot → the next syncs start at once and end with exactly the mailbox; an unreachable
Firestore → one line within seconds."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from google.cloud import firestore
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL, temporary_settings
from typer.testing import CliRunner

from emailsync.cli import app
from emailsync.config import get_settings
from emailsync.firestore.emails import EmailRepository
from emailsync.firestore.sync_state import SyncStateRepository
from emailsync.local.gmail_server.server import GmailApiServer
from emailsync.local.mailbox import Mailbox
from emailsync.local.prefect_server import ServerInfo, SharedPrefectServer
from emailsync.local.processes import free_port
from emailsync.local.seed import SeededAccount, seed_account
from emailsync.models import SyncStatus
from tests.fixtures.firestore import progress_docs
from tests.fixtures.gmail import REPO_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.prefect]

EMAILSYNC = str(Path(sys.executable).with_name("emailsync"))
FAST_QUOTA = 2500
runner = CliRunner()


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """This module's machine state: its own shared local Prefect server, stopped at the end."""
    path = tmp_path_factory.mktemp("emailsync-state")
    yield path
    SharedPrefectServer(path / "prefect").stop()


def cli_environment(state_dir: Path, server: GmailApiServer | None = None, **extra: str) -> dict[str, str]:
    environment = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_API")}
    environment.update(EMAILSYNC_STATE_DIR=str(state_dir), COLUMNS="200", **extra)
    if server is not None:
        environment.update(
            GMAIL_API_ENDPOINT=server.url, EMAILSYNC_QUOTA_UNITS_PER_SECOND=str(server.quota_units_per_second)
        )
    return environment


def start_sync(provider_user_id: str, environment: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as output:
        return subprocess.Popen(
            [EMAILSYNC, "sync", provider_user_id],
            cwd=REPO_ROOT,
            env=environment,
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )


def lines(log: Path) -> list[str]:
    return [line for line in log.read_text(errors="replace").splitlines() if line.strip()]


def small_mailbox(sample_mailbox: Mailbox, count: int) -> Mailbox:
    messages = sample_mailbox.newest_first()
    step = len(messages) // count
    return Mailbox.from_raw_messages([messages[i * step].raw for i in range(count)], shift_dates=True)


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


@pytest.mark.timeout(600)  # ten Python processes importing Prefect on a small machine
def test_ten_simultaneous_syncs_of_one_user_without_a_prefect_server_run_one_and_skip_nine(
    firestore_client: firestore.Client, sample_mailbox, make_gmail_server, state_dir: Path, tmp_path: Path
):
    account = seed_account(firestore_client, provider_user_id="pu-ten", token="ten-token", gmail_active=True)
    mailbox = small_mailbox(sample_mailbox, 10)
    server = make_gmail_server(mailbox, quota_units_per_second=FAST_QUOTA)
    environment = cli_environment(state_dir, server)
    # Gmail holds every call until all ten have been decided: the one sync is still running meanwhile.
    server.pause()
    logs = [tmp_path / f"sync-{n}.log" for n in range(10)]
    processes = [start_sync(account.provider_user_id, environment, log) for log in logs]
    try:
        wait_for(
            lambda: (
                sum(
                    bool((doc.details.model_extra or {}).get("skipped"))
                    for doc in docs(firestore_client, account)
                )
                == 9
            ),
            timeout=450,
            what="nine skipped syncs",
        )
    finally:
        server.resume()
        for process in processes:
            try:
                process.wait(timeout=180)
            except subprocess.TimeoutExpired:
                process.kill()

    outputs = [lines(log) for log in logs]
    assert [process.returncode for process in processes] == [0] * 10, outputs
    assert all(len(output) == 1 for output in outputs), outputs
    completed = [output[0] for output in outputs if " completed: " in output[0]]
    skipped = [output[0] for output in outputs if output[0].startswith("skipped: ")]
    assert len(completed) == 1 and len(skipped) == 9, outputs
    assert "10 emails processed, 10 stored" in completed[0]
    assert EmailRepository(firestore_client).count(account.provider_user_id) == len(mailbox)
    # one server for all ten
    assert len(list((state_dir / "prefect").glob("server.json"))) == 1


def docs(client: firestore.Client, account: SeededAccount):  # -> list[SyncProgress]
    return progress_docs(client, account.provider_user_id)


@pytest.mark.timeout(600)
def test_a_sync_killed_inside_its_slot_is_taken_over_at_once_and_the_next_syncs_do_not_wait(
    firestore_client: firestore.Client, sample_mailbox, make_gmail_server, state_dir: Path, tmp_path: Path
):
    account = seed_account(
        firestore_client, provider_user_id="pu-killed", token="kill-token", gmail_active=True
    )
    mailbox = small_mailbox(sample_mailbox, 40)
    server = make_gmail_server(mailbox, quota_units_per_second=FAST_QUOTA)
    # Leases as long as the old default: a rerun waiting for either would take minutes.
    lease_seconds = 300
    environment = cli_environment(
        state_dir, server, EMAILSYNC_BATCH_SIZE="10", EMAILSYNC_LEASE_TIMEOUT_SECONDS=str(lease_seconds)
    )
    emails, sync_state = EmailRepository(firestore_client), SyncStateRepository(firestore_client)
    doomed = start_sync(account.provider_user_id, environment, tmp_path / "killed.log")
    try:
        wait_for(
            lambda: doomed.poll() is not None or emails.count(account.provider_user_id) >= 10,
            timeout=180,
            what="the first batch stored",
        )
        server.pause()  # mid-backfill, inside the Prefect slot
        assert sync_state.get(account.provider_user_id).slot_lease_id is not None, lines(
            tmp_path / "killed.log"
        )
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(timeout=30)
    finally:
        server.resume()
        if doomed.poll() is None:
            doomed.kill()
    [killed_doc] = docs(firestore_client, account)

    started_within: list[float] = []
    for name in ("rerun", "next"):
        before = {doc.syncId for doc in docs(firestore_client, account)}
        launched = time.monotonic()
        process = start_sync(account.provider_user_id, environment, tmp_path / f"{name}.log")
        wait_for(
            lambda before=before: any(
                doc.syncId not in before and doc.status is not SyncStatus.PENDING
                for doc in docs(firestore_client, account)
            ),
            timeout=lease_seconds / 2,
            what=f"the {name} to start",
        )
        started_within.append(time.monotonic() - launched)
        assert process.wait(timeout=180) == 0, lines(tmp_path / f"{name}.log")
        [line] = lines(tmp_path / f"{name}.log")
        assert " completed: " in line

    # Neither waited for the dead sync's lease or slot (each would have taken lease_seconds).
    assert max(started_within) < lease_seconds / 5, started_within
    ids = emails.list_ids(account.provider_user_id)
    assert len(ids) == len(set(ids)) == len(mailbox)
    killed = next(doc for doc in docs(firestore_client, account) if doc.syncId == killed_doc.syncId)
    assert killed.status is SyncStatus.FAILED and "interrupted" in (killed.error or "")
    info = SharedPrefectServer(state_dir / "prefect").info()
    assert info is not None
    with temporary_settings({PREFECT_API_URL: info.api_url}), get_client(sync_client=True) as client:
        limit = client.read_global_concurrency_limit_by_name(f"email-sync:{account.provider_user_id}")
    assert limit.active_slots == 0


def test_an_unreachable_firestore_fails_within_seconds_with_one_line(state_dir: Path, tmp_path: Path):
    port = free_port()
    environment = cli_environment(state_dir, FIRESTORE_EMULATOR_HOST=f"127.0.0.1:{port}")
    started = time.monotonic()

    result = subprocess.run(
        [EMAILSYNC, "sync", "pu-anyone"],
        cwd=REPO_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 1
    assert time.monotonic() - started < 15
    output = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert output == [f"sync failed: Firestore emulator at 127.0.0.1:{port} is unreachable"]


def test_the_shared_server_is_stopped_by_command_or_when_idle_and_a_restart_frees_orphaned_slots(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("EMAILSYNC_STATE_DIR", str(state_dir))
    monkeypatch.setenv("EMAILSYNC_PREFECT_SERVER_IDLE_MINUTES", "0.05")  # 3 s (for the next start)
    get_settings.cache_clear()
    server = SharedPrefectServer()
    assert server.state_dir == state_dir / "prefect"
    api_url = server.ensure(register=False)  # the one the syncs above used
    assert runner.invoke(app, ["prefect-server", "status"]).stdout.startswith(api_url)
    # A slot held when the server went away, as a sync killed with its server would leave it.
    requests.post(
        f"{api_url}/v2/concurrency_limits/", json={"name": "email-sync:pu-orphan", "limit": 1}, timeout=10
    )
    requests.patch(
        f"{api_url}/v2/concurrency_limits/email-sync:pu-orphan", json={"active_slots": 1}, timeout=10
    )

    assert runner.invoke(app, ["prefect-server", "stop"]).stdout.strip() == "stopped the local Prefect server"
    assert (
        runner.invoke(app, ["prefect-server", "status"]).stdout.strip()
        == "no local Prefect server is running"
    )

    api_url = server.ensure()  # this test process is now a client: the server must not stop under it
    limit = requests.get(f"{api_url}/v2/concurrency_limits/email-sync:pu-orphan", timeout=10).json()
    assert limit["active_slots"] == 0
    time.sleep(6)
    assert server.info() is not None
    (server.clients_dir / str(os.getpid())).unlink()  # as when this command exits
    supervisor = ServerInfo.model_validate_json(server.info_path.read_text()).supervisor_pid
    wait_for(
        lambda: server.info() is None and not process_exists(supervisor), timeout=60, what="the idle stop"
    )
    get_settings.cache_clear()


def process_exists(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
