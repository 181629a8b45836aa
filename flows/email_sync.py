"""`email_sync`: back-fill or incrementally sync one provider user's Gmail into Firestore.

    open the run: resolve user + credentials → pending progress doc → per-user lease (skip if another
    sync holds it) → Prefect slot `email-sync:{providerUserId}` → choose the plan: incremental (history
    since lastHistoryId: every change, applied page by page), backfill (weekly windows newest first,
    resumed from the checkpoint, then the changes made meanwhile) or reconcile (history expired) → every
    batch fetched, then stored → cursors for the next sync → completed / failed progress.

Batches are pipelined: while `process_email_batch` parses, enriches and stores batch N, the
`fetch_email_batch` task is already listing and downloading batch N+1 (`fetch_ahead`), so the Gmail
quota (the real bottleneck) never waits for the CPU-bound enrichment. Two task runs per batch keep
Prefect's overhead small. Where each step lives: docs/ARCHITECTURE.md. Run one sync from a shell with
`python -m flows.email_sync PROVIDER_USER_ID`.
"""

from __future__ import annotations

import argparse
import sys

from prefect import flow

from emailsync.config import get_settings
from emailsync.lifecycle import ConnectionGuard
from emailsync.models import SyncTrigger
from emailsync.sync.plan import SyncPlan, catch_up_plan, choose_plan
from emailsync.sync.summary import SyncSummary
from tasks.batch import process_email_batch
from tasks.concurrency import user_sync_slot
from tasks.gmail import PlanningTasks, fetch_email_batch
from tasks.logs import route_domain_logs_to_prefect
from tasks.pipelining import fetch_ahead
from tasks.sync_run import FLOW_RUN_TAGS, finish_sync, label_flow_run, open_sync_run

__all__ = ["FLOW_RUN_TAGS", "email_sync", "main"]

route_domain_logs_to_prefect()  # emailsync.* log lines in the flow run's logs (the Prefect UI)


@flow(
    name="email-sync",
    # user and trigger here; the mode joins name and tags once the plan is chosen (`label_flow_run`)
    flow_run_name="email-sync-{provider_user_id}-{trigger}",
    persist_result=False,
)
def email_sync(
    provider_user_id: str,
    trigger: str = "manual",
    sync_id: str | None = None,
    lookback_weeks: int | None = None,
    batch_size: int | None = None,
) -> SyncSummary:
    """Sync one provider user's Gmail. Another sync of the same user already running → skipped."""
    settings = get_settings()
    run = open_sync_run(provider_user_id, trigger, sync_id)  # user, pending doc, lease
    if run.skipped:
        return run.summary
    connection = ConnectionGuard.load(provider_user_id)  # revoked grant → needsReauth; disconnect → stop
    # failed document on error (with the readable cause), lease released always; the slot's lease
    # lives as long as the run's heartbeat
    with (
        connection.watching(),
        run.reported(),
        user_sync_slot(run, wait_seconds=settings.lease_timeout_seconds),
    ):
        calls = PlanningTasks(run)
        plan: SyncPlan | None = choose_plan(
            run,
            calls,
            lookback_weeks=settings.lookback_weeks if lookback_weeks is None else lookback_weeks,
            batch_size=batch_size or settings.batch_size,
        )
        label_flow_run(run)
        while plan is not None:  # a backfill is followed by the changes made while it ran
            for batch in fetch_ahead(fetch_email_batch, run, plan):  # N+1 downloads while N is stored
                process_email_batch(run, plan, batch)
                connection.check(run.summary.emails_processed)  # Gmail disconnected since → stop here
            finish_sync(run, plan)
            plan = catch_up_plan(run, calls, plan)
    return run.summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.email_sync", description=__doc__.splitlines()[0])
    parser.add_argument("provider_user_id")
    parser.add_argument("--trigger", default="manual", choices=[t.value for t in SyncTrigger])
    parser.add_argument("--sync-id", default=None)
    parser.add_argument("--lookback-weeks", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    args = parser.parse_args(argv)
    summary = email_sync(
        args.provider_user_id,
        trigger=args.trigger,
        sync_id=args.sync_id,
        lookback_weeks=args.lookback_weeks,
        batch_size=args.batch_size,
    )
    print(summary.model_dump_json())
    return 0


if __name__ == "__main__":
    sys.exit(main())
