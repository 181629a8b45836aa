"""The fleet sweep: real Firestore emulator, real Gmail server, real flows; idle users cost one
history.list call and nothing else, and every user's outcome is named."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from functools import cache
from typing import Any

import pytest
from google.cloud import firestore
from typer.testing import CliRunner

from emailsync.cli import app
from emailsync.cli.console import EXIT_BAD_INPUT
from emailsync.config import get_settings
from emailsync.firestore.emails import EmailRepository
from emailsync.firestore.progress import ProgressWriter
from emailsync.local.gmail_server.server import GmailApiServer
from emailsync.local.mailbox import Mailbox, read_mbox
from emailsync.local.seed import seed_account
from emailsync.sweep import Outcome, Reason, in_shard
from flows.periodic_sync import periodic_email_sync
from tests.fixtures.firestore import REPO_ROOT, progress_docs
from tests.fixtures.gmail import SAMPLE_MBOX

pytestmark = [pytest.mark.integration, pytest.mark.prefect]

USERS = [f"pu-sweep-{n}" for n in range(7)]


@cache
def _raws() -> tuple[bytes, ...]:
    return tuple(read_mbox(SAMPLE_MBOX))


def _outcomes(result: Any) -> dict[str, tuple[Outcome, Reason]]:
    return {o.provider_user_id: (o.outcome, o.reason) for o in result.outcomes}


def test_the_sweep_syncs_only_users_that_need_it_and_names_every_outcome(
    firestore_client: firestore.Client,
    gmail_server: GmailApiServer,
    prefect_server: Any,
    monkeypatch: pytest.MonkeyPatch,
):
    gmail_server.configure(quota_units_per_second=0)
    monkeypatch.setenv("GMAIL_API_ENDPOINT", gmail_server.url)
    get_settings.cache_clear()
    raws = _raws()
    for n, user in enumerate(USERS):
        gmail_server.add_mailbox(
            f"token-{user}",
            Mailbox.from_raw_messages(raws[2 * n : 2 * n + 2], email_address=f"{user}@example.com"),
        )
        seed_account(
            firestore_client,
            provider_user_id=user,
            family_id=f"family-{user}",
            email=f"{user}@example.com",
            token=f"token-{user}",
            gmail_active=True,
        )
        if user != "pu-sweep-0":  # back-filled already; pu-sweep-0 never finished its backfill
            history_id = str(gmail_server.mailbox_for(f"token-{user}").history_id)
            firestore_client.collection("syncState").document(user).set(
                {"backfillCompleted": True, "lastHistoryId": history_id, "backfillCursor": None}
            )

    # pu-sweep-1 gets new mail whose push notification was lost (no listener ran): the sweep catches it.
    new_id = gmail_server.add_message(raws[100], token="token-pu-sweep-1")
    # pu-sweep-2's grant needs re-authorization (#12's field, maybe unknown to the model yet): skipped.
    firestore_client.collection("providerUsers").document("pu-sweep-2").update(
        {"services.gmail.needsReauth": True}
    )
    # pu-sweep-3's credentials are unreadable now: its check fails and is named, with the reason.
    credentials = firestore_client.collection("providerCredentials").document("pu-sweep-3")
    saved = credentials.get().to_dict()
    credentials.delete()
    # pu-sweep-4's history expired: one full backfill again.
    gmail_server.add_message(raws[101], token="token-pu-sweep-4")
    gmail_server.expire_history_before(10**9, token="token-pu-sweep-4")
    # pu-sweep-5's last sync failed (after its last successful one): synced again.
    progress = ProgressWriter(firestore_client)
    progress.create_pending("pu-sweep-5-failed", "family-pu-sweep-5-member-1", None, "pu-sweep-5", "manual")
    progress.fail("pu-sweep-5-failed", "Gmail was unreachable")
    docs_before = {user: len(progress_docs(firestore_client, user)) for user in USERS}
    gmail_server.reset_stats()

    result = periodic_email_sync()

    assert _outcomes(result) == {
        "pu-sweep-0": (Outcome.STARTED, Reason.BACKFILL_UNFINISHED),
        "pu-sweep-1": (Outcome.STARTED, Reason.CHANGES),
        "pu-sweep-2": (Outcome.SKIPPED, Reason.NEEDS_REAUTH),
        "pu-sweep-3": (Outcome.FAILED, Reason.CHECK_FAILED),
        "pu-sweep-4": (Outcome.STARTED, Reason.HISTORY_EXPIRED),
        "pu-sweep-5": (Outcome.STARTED, Reason.LAST_SYNC_FAILED),
        "pu-sweep-6": (Outcome.IDLE, Reason.NO_CHANGES),
    }
    assert {o.sync_result for o in result.of(Outcome.STARTED)} == {"completed"}
    failed = result.of(Outcome.FAILED)[0]
    assert "credentials" in (failed.error or "")
    assert new_id in EmailRepository(firestore_client).list_ids("pu-sweep-1")
    # Idle and skipped users: no progress document, no messages.get; one history call per checked user.
    for user in ("pu-sweep-2", "pu-sweep-6"):
        assert len(progress_docs(firestore_client, user)) == docs_before[user], user
    lines = result.summary_lines()
    assert lines[0] == "idle: 1"
    assert lines[3].startswith("failed: 1 — pu-sweep-3 (check_failed: ")

    # The next sweep retries the user it could not check.
    credentials.set(saved)
    next_sweep = periodic_email_sync()
    assert _outcomes(next_sweep)["pu-sweep-3"] == (Outcome.IDLE, Reason.NO_CHANGES)
    assert _outcomes(next_sweep)["pu-sweep-1"] == (Outcome.IDLE, Reason.NO_CHANGES)
    assert _outcomes(next_sweep)["pu-sweep-5"] == (Outcome.IDLE, Reason.NO_CHANGES)
    assert _outcomes(next_sweep)["pu-sweep-0"] == (Outcome.IDLE, Reason.NO_CHANGES)


def test_shards_split_the_fleet_without_overlap():
    ids = [f"pu-{n}" for n in range(1000)]
    shards = [{i for i in ids if in_shard(i, index, 4)} for index in range(4)]
    assert set().union(*shards) == set(ids)
    assert sum(len(shard) for shard in shards) == len(ids)
    assert all(150 < len(shard) < 350 for shard in shards)


SWEEP_IN_A_FRESH_PROCESS = """
import json, sys
from flows.periodic_sync import periodic_email_sync
result = periodic_email_sync()
heavy = sorted(m for m in ("torch", "onnxruntime", "sentence_transformers") if m in sys.modules)
print(json.dumps({"counts": result.counts(), "heavy": heavy}))
"""


def test_a_sweep_of_idle_users_never_imports_torch_or_onnxruntime(
    firestore_client: firestore.Client,
    gmail_server: GmailApiServer,
    prefect_server: Any,
    monkeypatch: pytest.MonkeyPatch,
):
    gmail_server.configure(quota_units_per_second=0)
    for n in range(3):
        user = f"pu-idle-{n}"
        gmail_server.add_mailbox(f"token-{user}", Mailbox.from_raw_messages(_raws()[n : n + 1]))
        seed_account(
            firestore_client,
            provider_user_id=user,
            family_id=f"f-{n}",
            token=f"token-{user}",
            gmail_active=True,
        )
        history_id = str(gmail_server.mailbox_for(f"token-{user}").history_id)
        firestore_client.collection("syncState").document(user).set(
            {"backfillCompleted": True, "lastHistoryId": history_id, "backfillCursor": None}
        )
    env = {
        **os.environ,
        **prefect_server.environ(),
        "GMAIL_API_ENDPOINT": gmail_server.url,
        "PYTHONPATH": str(REPO_ROOT),
    }
    completed = subprocess.run(
        [sys.executable, "-c", SWEEP_IN_A_FRESH_PROCESS],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    assert report == {"counts": {"idle": 3, "started": 0, "skipped": 0, "failed": 0}, "heavy": []}
    # `emailsync sweep` prints one line per outcome category; a shard outside the fleet is bad input.
    monkeypatch.setenv("GMAIL_API_ENDPOINT", gmail_server.url)
    get_settings.cache_clear()
    output = CliRunner().invoke(app, ["sweep"])
    assert output.exit_code == 0, output.output
    assert [line for line in output.output.splitlines() if ":" in line][-4:] == [
        "idle: 3",
        "started: 0",
        "skipped: 0",
        "failed: 0",
    ]
    bad = CliRunner().invoke(app, ["sweep", "--shard-index", "2", "--shard-count", "2"])
    assert bad.exit_code == EXIT_BAD_INPUT
