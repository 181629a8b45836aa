"""`periodic_email_sync`: the sweep that keeps every connected mailbox fresh at fleet scale.

One flow run checks every connected user of its shard in-process (`emailsync.sweep.Sweep`: one
history.list call per user, concurrently on a bounded thread pool, no model load, no progress document
for an idle user) and starts an `email-sync` run only for the users that need one: changes, an expired
history, an unfinished backfill or a failed last sync. With a Prefect API and the `email-sync`
deployment registered, each such sync is a run of that deployment (workers of the pool share them);
otherwise the syncs run here as subflows on a small thread pool and the result says how they ended.

The result names every user's outcome (idle / started / skipped / failed with the reason). Nothing is
marked done for a user the sweep could not check or start, so the next sweep retries it. Shards
(`shard_index` of `shard_count`, by a stable hash of the provider user id) let several workers split
the fleet. Run once from a shell with `emailsync sweep` or `python -m flows.periodic_sync`.
"""

from __future__ import annotations

import contextvars
from concurrent.futures import Future, ThreadPoolExecutor

from prefect import flow, get_run_logger

from emailsync.config import get_settings
from emailsync.deployment_specs import EMAIL_SYNC_DEPLOYMENT
from emailsync.firestore.client import get_firestore_client
from emailsync.firestore.progress import get_progress_writer
from emailsync.firestore.users import ProviderUserRepository
from emailsync.models import ProviderUser, SyncTrigger
from emailsync.sweep import Outcome, Reason, Sweep, SweepResult
from emailsync.sync.ids import new_sync_id

DEFAULT_SYNC_CONCURRENCY = 4


def _deployment_available(name: str) -> bool:
    """True when a Prefect API is configured and knows the deployment (so a worker can run it)."""
    if not get_settings().prefect_api_url:
        return False
    from prefect.client.orchestration import get_client

    try:
        with get_client(sync_client=True) as client:
            client.read_deployment_by_name(name)
        return True
    except Exception:
        return False


class _DeploymentStarter:
    """A sync = a run of the `email-sync` deployment (pending document first, as the watcher does)."""

    def __init__(self, deployment_name: str, context: contextvars.Context) -> None:
        self.deployment_name = deployment_name
        self.context = context

    def __call__(self, provider_user_id: str, user: ProviderUser, reason: Reason) -> str:
        return self.context.copy().run(self._start, provider_user_id, user, reason)

    def _start(self, provider_user_id: str, user: ProviderUser, reason: Reason) -> str:
        from prefect.deployments import run_deployment

        progress = get_progress_writer()
        sync_id = new_sync_id(provider_user_id, SyncTrigger.SCHEDULE)
        progress.create_pending(
            sync_id, user.app_user_id, user.family_id, provider_user_id, SyncTrigger.SCHEDULE
        )
        try:
            # timeout=0: schedule and move on; workers of the pool pick the runs up.
            flow_run = run_deployment(
                self.deployment_name,
                parameters={
                    "provider_user_id": provider_user_id,
                    "trigger": SyncTrigger.SCHEDULE.value,
                    "sync_id": sync_id,
                },
                timeout=0,
                as_subflow=False,
                tags=["emailsync", "trigger:schedule", f"sweep:{reason.value}"],
            )
        except Exception as exc:
            progress.fail(sync_id, f"could not start the sync: {exc}")
            raise
        return str(flow_run.id)


class _InProcessStarter:
    """A sync = the `email_sync` flow as a subflow of this run, on a bounded thread pool."""

    def __init__(self, max_workers: int, context: contextvars.Context) -> None:
        self.context = context
        self.pool = ThreadPoolExecutor(max_workers=max(1, max_workers), thread_name_prefix="sweep-sync")
        self.futures: dict[str, Future[str]] = {}

    def __call__(self, provider_user_id: str, user: ProviderUser, reason: Reason) -> str:
        sync_id = new_sync_id(provider_user_id, SyncTrigger.SCHEDULE)
        self.futures[provider_user_id] = self.pool.submit(
            self.context.copy().run, self._run, provider_user_id, sync_id
        )
        return sync_id

    @staticmethod
    def _run(provider_user_id: str, sync_id: str) -> str:
        from flows.email_sync import email_sync  # imported by the first user that needs a sync

        summary = email_sync(provider_user_id, trigger=SyncTrigger.SCHEDULE.value, sync_id=sync_id)
        return "skipped (already syncing)" if summary.skipped else "completed"

    def wait(self, result: SweepResult) -> None:
        """Wait for the syncs and put how each ended into the result."""
        self.pool.shutdown(wait=True)
        for item in result.of(Outcome.STARTED):
            future = self.futures.get(item.provider_user_id)
            if future is None:
                continue
            try:
                item.sync_result = future.result()
            except Exception as exc:  # the flow wrote the cause into syncProgress too
                item.sync_result = f"failed: {exc}"


@flow(name="periodic-email-sync", log_prints=True)
def periodic_email_sync(
    shard_index: int = 0,
    shard_count: int = 1,
    max_concurrency: int | None = None,
    sync_concurrency: int = DEFAULT_SYNC_CONCURRENCY,
    deployment_name: str = EMAIL_SYNC_DEPLOYMENT,
) -> SweepResult:
    """Check every connected user of this shard; start a sync only for those that need one.

    `max_concurrency`: users checked at once (None: `EMAILSYNC_SWEEP_CONCURRENCY`);
    `sync_concurrency`: syncs run at once when they run in this process (no deployment).
    """
    logger = get_run_logger()
    client = get_firestore_client()
    users = ProviderUserRepository(client).list_gmail_active()
    context = contextvars.copy_context()
    in_process = None
    if _deployment_available(deployment_name):
        starter = _DeploymentStarter(deployment_name, context)
    else:
        starter = in_process = _InProcessStarter(sync_concurrency, context)
    result = Sweep(client, starter, max_workers=max_concurrency).run(
        users, shard_index=shard_index, shard_count=shard_count
    )
    if in_process is not None:
        in_process.wait(result)
    for line in result.summary_lines():
        logger.info("%s", line)
    if shard_index == 0:  # one shard is enough to fail the pending documents whose run never started
        stale = get_progress_writer().fail_stale_pending()
        if stale:
            logger.info("%d pending syncs never started; marked failed: %s", len(stale), ", ".join(stale))
    return result


if __name__ == "__main__":
    for line in periodic_email_sync().summary_lines():
        print(line)
