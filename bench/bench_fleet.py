"""The periodic sweep at fleet scale: 1,000 connected users on the local Gmail server, 2% with new mail.

The sweep runs where a worker would run it: in its own process (`flows.periodic_sync`, against a real
Prefect API and the Firestore emulator), so its CPU time is the worker's alone (the Gmail server and
the emulator live elsewhere). Figures, all from one run:

- all idle: worker CPU-seconds per idle user (the whole sweep's CPU ÷ users, flow overhead included),
  quota units per idle user (from the server's request counts), sweep wall time;
- 2% with new mail: sweep wall time (checks + starts), users started, the syncs' total wall;
- today's path beside it: `email_sync` run per idle user (what the hourly fan-out did for everyone),
  CPU-seconds and wall per user and progress documents written, measured on a sample in the same
  worker process and extrapolated to the fleet.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
PROJECT = "omnibutler-bench-fleet"
USERS = int(os.environ.get("BENCH_FLEET_USERS", "1000"))
CHANGED_FRACTION = 0.02
OLD_PATH_SAMPLE = 20
OLD_PATH_CONCURRENCY = 4  # the per-user fan-out ran 4 syncs at a time in-process

WORKER = """
import json, sys, time
started_cpu = time.process_time()
from flows.periodic_sync import periodic_email_sync
from flows.email_sync import email_sync
import_cpu = time.process_time() - started_cpu
mode, users = sys.argv[1], sys.argv[2:]
out = {"import_cpu_seconds": import_cpu}
if mode == "sweep":
    cpu, wall = time.process_time(), time.perf_counter()
    result = periodic_email_sync()
    out.update(cpu_seconds=time.process_time() - cpu, flow_wall_seconds=time.perf_counter() - wall,
               sweep_wall_seconds=result.wall_seconds, counts=result.counts(),
               history_calls=result.history_calls,
               sync_results=sorted({str(o.sync_result) for o in result.outcomes if o.sync_result}))
else:  # today's path: one email_sync flow run per user, idle or not
    cpu, wall = time.process_time(), time.perf_counter()
    for user in users:
        email_sync(user, trigger="schedule")
    out.update(cpu_seconds=time.process_time() - cpu, wall_seconds=time.perf_counter() - wall)
out["heavy_modules"] = sorted(m for m in ("torch", "onnxruntime") if m in sys.modules)
print("RESULT " + json.dumps(out))
"""


def _worker(mode: str, env: dict[str, str], users: list[str] | None = None) -> dict[str, Any]:
    completed = subprocess.run(
        [sys.executable, "-c", WORKER, mode, *(users or [])],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    lines = [line for line in completed.stdout.splitlines() if line.startswith("RESULT ")]
    if completed.returncode != 0 or not lines:
        raise RuntimeError(f"worker {mode} failed:\n{completed.stderr[-4000:]}")
    return json.loads(lines[-1].removeprefix("RESULT "))


def _seed(client: Any, server: Any, raws: list[bytes]) -> list[str]:
    from emailsync.local.mailbox import Mailbox

    ids = [f"pu-fleet-{n:05d}" for n in range(USERS)]
    now = datetime.now(UTC)
    batch, writes = client.batch(), 0
    for n, user in enumerate(ids):
        token = f"token-{user}"
        mailbox = Mailbox.from_raw_messages([raws[n % len(raws)]], email_address=f"{user}@example.com")
        server.add_mailbox(token, mailbox)
        writes += 3
        batch.set(
            client.collection("providerUsers").document(user),
            {
                "appUserId": f"app-{user}",
                "familyId": None,
                "provider": "google",
                "email": f"{user}@example.com",
                "services": {"gmail": {"active": True, "connectedAt": now}},
            },
        )
        batch.set(client.collection("providerCredentials").document(user), {"token": token})
        # Back-filled already: the sweep's question is only "anything new since lastHistoryId?".
        batch.set(
            client.collection("syncState").document(user),
            {"backfillCompleted": True, "lastHistoryId": str(mailbox.history_id), "backfillCursor": None},
        )
        if writes >= 450:
            batch.commit()
            batch, writes = client.batch(), 0
    if writes:
        batch.commit()
    return ids


def _units(server: Any) -> int:
    from emailsync.config import QuotaCosts

    costs = QuotaCosts()
    table = {
        "history.list": costs.history_list,
        "getProfile": costs.get_profile,
        "messages.get": costs.messages_get,
        "messages.list": costs.messages_list,
    }
    return sum(table.get(method, 0) * count for method, count in server.stats.requests_by_method.items())


def run() -> dict[str, Any]:
    from prefect.settings import PREFECT_API_URL

    from bench.services import firestore_and_prefect
    from emailsync.local.gmail_server.server import GmailApiServer
    from emailsync.local.mailbox import Mailbox, read_mbox

    raws = read_mbox(REPO_ROOT / "samples" / "sample.mbox")
    figures: dict[str, Any] = {"users": USERS, "changed_fraction": CHANGED_FRACTION}
    with (
        firestore_and_prefect(PROJECT) as (emulator, client),
        GmailApiServer(Mailbox.from_raw_messages(raws[:1])) as server,
    ):
        seeded = time.perf_counter()
        ids = _seed(client, server, raws)
        figures["seed_seconds"] = round(time.perf_counter() - seeded, 1)
        env = {
            **os.environ,
            **emulator.environ(PROJECT),
            "PREFECT_API_URL": PREFECT_API_URL.value(),
            "GMAIL_API_ENDPOINT": server.url,
            "PYTHONPATH": str(REPO_ROOT),
        }

        server.reset_stats()
        idle = _worker("sweep", env)
        units = _units(server)
        figures["all_idle"] = {
            "sweep_wall_seconds": round(idle["sweep_wall_seconds"], 2),
            "flow_wall_seconds": round(idle["flow_wall_seconds"], 2),
            "worker_cpu_seconds": round(idle["cpu_seconds"], 2),
            "cpu_seconds_per_idle_user": round(idle["cpu_seconds"] / USERS, 4),
            "quota_units_per_idle_user": round(units / USERS, 2),
            "gmail_calls": dict(server.stats.requests_by_method),
            "counts": idle["counts"],
            "worker_imported": idle["heavy_modules"],
        }

        changed = ids[:: int(1 / CHANGED_FRACTION)]
        for n, user in enumerate(changed):
            server.add_message(raws[(n + 7) % len(raws)], token=f"token-{user}")
        server.reset_stats()
        mixed = _worker("sweep", env)
        idle_users = USERS - len(changed)
        figures["two_percent_new_mail"] = {
            "sweep_wall_seconds": round(mixed["sweep_wall_seconds"], 2),
            "flow_wall_seconds_with_syncs": round(mixed["flow_wall_seconds"], 2),
            "counts": mixed["counts"],
            "sync_results": mixed["sync_results"],
            "gmail_calls": dict(server.stats.requests_by_method),
            "worker_imported": mixed["heavy_modules"],
        }

        sample = ids[1 : 1 + OLD_PATH_SAMPLE]  # idle users (the changed ones are ids[::50])
        old = _worker("per-user", env, sample)
        per_user_cpu = old["cpu_seconds"] / len(sample)
        per_user_wall = old["wall_seconds"] / len(sample)
        figures["todays_flow_run_per_user"] = {
            "sample_users": len(sample),
            "cpu_seconds_per_idle_user": round(per_user_cpu, 3),
            "wall_seconds_per_idle_user": round(per_user_wall, 3),
            "progress_documents_per_idle_user": 1,
            "extrapolated_fleet_cpu_seconds": round(per_user_cpu * USERS, 1),
            "extrapolated_fleet_wall_seconds": round(per_user_wall * USERS / OLD_PATH_CONCURRENCY, 1),
            "idle_users_in_the_two_percent_run": idle_users,
        }
        sweep_cpu = figures["all_idle"]["cpu_seconds_per_idle_user"]
        figures["cpu_per_idle_user_ratio_today_vs_sweep"] = (
            round(per_user_cpu / sweep_cpu, 1) if sweep_cpu else None
        )
        figures["goals"] = {
            "cpu_seconds_per_idle_user": "<= 0.05",
            "quota_units_per_idle_user": "2",
            "sweep_wall_seconds": "<= 60",
        }
    return figures


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
