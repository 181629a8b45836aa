"""Two process workers share the hourly fan-out: 20 users' syncs through the production path.

A real `prefect server` (sqlite), prefect.yaml deployed with `prefect deploy --all` on the process
pool `emailsync-pool`, two `prefect worker` subprocesses (at most WORKER_LIMIT concurrent flow runs
each). One run of `periodic-email-sync/periodic-email-sync` schedules one `email-sync` run per user
(run_deployment); the workers pick them up. Reports the total time from the fan-out's start to the
last user's completed syncProgress, and how many runs each worker executed.
"""

from __future__ import annotations

import re
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from google.cloud.firestore_v1.base_query import FieldFilter

from bench.bench_watcher import BENCH_PROJECT, local_stack, sample_raws
from emailsync.firestore.client import get_firestore_client
from emailsync.local.mailbox import Mailbox
from emailsync.models import SyncProgress, SyncStatus

REPO_ROOT = Path(__file__).resolve().parent.parent
POOL = "emailsync-pool"
USERS = 20
MAILBOX_SIZE = 10
WORKERS = 2
WORKER_LIMIT = 2
TIMEOUT_SECONDS = 600.0
_SUBMITTED = re.compile(r"submitting flow run '([0-9a-f-]{36})'")
# Both workers may grab the same due run; the server lets one of them have it, the other aborts.
_ABORTED = re.compile(r"Aborted submission of flow run '([0-9a-f-]{36})'")


def _completed_schedule_syncs(client: Any) -> dict[str, SyncProgress]:
    query = client.collection(SyncProgress.COLLECTION).where(
        filter=FieldFilter("details.trigger", "==", "schedule")
    )
    docs = [SyncProgress.from_firestore(snapshot.to_dict()) for snapshot in query.stream()]
    failed = [doc for doc in docs if doc.status == SyncStatus.FAILED]
    if failed:
        raise RuntimeError(f"sync of {failed[0].providerUserId} failed: {failed[0].error}")
    return {doc.providerUserId: doc for doc in docs if doc.status == SyncStatus.COMPLETED}


def run() -> dict[str, Any]:
    from deployments.serve import PrefectServerProcess
    from emailsync.local.seed import seed_account

    raws = sample_raws()
    with local_stack() as (emulator, gmail), tempfile.TemporaryDirectory(prefix="bench-prefect-") as home:
        gmail.configure(quota_units_per_second=250)  # production quota, per user (token)
        client = get_firestore_client()
        users = [f"pu-fanout-{n:02d}" for n in range(USERS)]
        for n, user in enumerate(users):
            token = f"token-{user}"
            start = (n * MAILBOX_SIZE) % (len(raws) - MAILBOX_SIZE)
            gmail.add_mailbox(token, Mailbox.from_raw_messages(raws[start : start + MAILBOX_SIZE]))
            seed_account(
                client, provider_user_id=user, family_id=f"family-{n:02d}", token=token, gmail_active=True
            )

        flow_env = {
            **emulator.environ(BENCH_PROJECT),
            "GMAIL_API_ENDPOINT": gmail.url,
            "EMAILSYNC_HOME": str(REPO_ROOT),
        }
        with PrefectServerProcess(Path(home)) as server:
            setup_started = time.perf_counter()
            server.cli("work-pool", "create", POOL, "--type", "process")
            server.cli("deploy", "--all", cwd=REPO_ROOT, extra_env=flow_env)
            server.cli("deployment", "schedule", "pause", "--all")  # we trigger the fan-out ourselves
            for n in range(1, WORKERS + 1):
                server.start_worker(POOL, f"worker-{n}", extra_env=flow_env, limit=WORKER_LIMIT)
            setup_seconds = time.perf_counter() - setup_started

            started = time.perf_counter()
            server.cli("deployment", "run", "periodic-email-sync/periodic-email-sync")
            deadline = time.monotonic() + TIMEOUT_SECONDS
            while len(done := _completed_schedule_syncs(client)) < USERS:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"only {len(done)}/{USERS} syncs completed in {TIMEOUT_SECONDS}s")
                time.sleep(0.5)
            total_seconds = time.perf_counter() - started

            runs_per_worker: Counter[str] = Counter()
            aborted = 0
            for n in range(1, WORKERS + 1):
                log = server.log_tail(lines=100_000, name=f"worker-worker-{n}.log")
                lost = set(_ABORTED.findall(log))
                runs_per_worker[f"worker-{n}"] = len(set(_SUBMITTED.findall(log)) - lost)
                aborted += len(lost)
        emails_stored = sum(int(doc.details.model_extra.get("emailsStored", 0)) for doc in done.values())

    return {
        "users": USERS,
        "messages_per_user": MAILBOX_SIZE,
        "workers": WORKERS,
        "worker_limit": WORKER_LIMIT,
        "setup_seconds": round(setup_seconds, 1),
        "total_seconds": round(total_seconds, 1),
        "seconds_per_user_sync": round(total_seconds / USERS, 2),
        "runs_per_worker": dict(runs_per_worker),  # includes the one periodic-email-sync run
        "flow_runs_total": sum(runs_per_worker.values()),  # 20 email-sync + 1 periodic-email-sync
        "submissions_lost_to_the_other_worker": aborted,
        "syncs_completed": len(done),
        "emails_stored": emails_stored,
    }
