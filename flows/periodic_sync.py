"""`periodic_email_sync`: the hourly fan-out that keeps every connected mailbox fresh.

It lists the provider users with Gmail active and starts one `email_sync` (trigger "schedule") per
user. With a Prefect API and the `email-sync` deployment registered, each sync is its own flow run
of that deployment, so every worker of the pool shares the load; otherwise the syncs run here as
subflows on a small thread pool. Either way the per-user limit holds: a user whose sync is still
running is skipped by that flow's lease, and an idle user costs one history.list call.
"""

from __future__ import annotations

import contextvars
from concurrent.futures import ThreadPoolExecutor

from prefect import flow, get_run_logger
from pydantic import BaseModel, Field

from emailsync.config import get_settings
from emailsync.deployment_specs import EMAIL_SYNC_DEPLOYMENT
from emailsync.firestore.client import get_firestore_client
from emailsync.firestore.repositories import ProviderUserRepository
from emailsync.lifecycle import automatic_sync_blocked
from emailsync.models import SyncTrigger
from emailsync.sync.summary import SyncSummary

DEFAULT_CONCURRENCY = 4


class PeriodicSyncSummary(BaseModel):
    """What one periodic run did: how many users, and how each of their syncs was started."""

    users: int
    via: str  # "deployment" | "in-process"
    flow_run_ids: dict[str, str] = Field(default_factory=dict)  # provider user id -> flow run id
    completed: list[str] = Field(default_factory=list)
    skipped: list[str] = Field(default_factory=list)  # a sync of that user was still running (lease)
    failed: dict[str, str] = Field(default_factory=dict)  # provider user id -> error


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


def _run_subflow(provider_user_id: str) -> SyncSummary:
    from flows.email_sync import email_sync

    return email_sync(provider_user_id, trigger=SyncTrigger.SCHEDULE.value)


@flow(name="periodic-email-sync", log_prints=True)
def periodic_email_sync(
    max_concurrency: int = DEFAULT_CONCURRENCY, deployment_name: str = EMAIL_SYNC_DEPLOYMENT
) -> PeriodicSyncSummary:
    """Start a scheduled sync for every provider user with Gmail active."""
    logger = get_run_logger()
    users = ProviderUserRepository(get_firestore_client()).list_gmail_active()
    logger.info("%d provider users with Gmail active", len(users))
    left_alone = {pid: why for pid, user in users if (why := automatic_sync_blocked(user)) is not None}
    for provider_user_id, why in left_alone.items():
        logger.info("not syncing %s: %s", provider_user_id, why)
    users = [(pid, user) for pid, user in users if pid not in left_alone]

    if _deployment_available(deployment_name):
        from prefect.deployments import run_deployment

        summary = PeriodicSyncSummary(users=len(users), via="deployment")
        for provider_user_id, _user in users:
            try:
                # timeout=0: schedule and move on; workers of the pool pick the runs up.
                flow_run = run_deployment(
                    deployment_name,
                    parameters={"provider_user_id": provider_user_id, "trigger": SyncTrigger.SCHEDULE.value},
                    timeout=0,
                    tags=["emailsync", "trigger:schedule"],
                )
                summary.flow_run_ids[provider_user_id] = str(flow_run.id)
            except Exception as exc:
                logger.error("could not schedule a sync for %s: %s", provider_user_id, exc)
                summary.failed[provider_user_id] = str(exc)
        logger.info("scheduled %d runs of %s", len(summary.flow_run_ids), deployment_name)
        return summary

    summary = PeriodicSyncSummary(users=len(users), via="in-process")
    # Each submission copies this flow's context, so the syncs are subflows of this run in the UI.
    with ThreadPoolExecutor(max_workers=max(1, max_concurrency), thread_name_prefix="periodic") as pool:
        futures = {
            provider_user_id: pool.submit(contextvars.copy_context().run, _run_subflow, provider_user_id)
            for provider_user_id, _user in users
        }
        for provider_user_id, future in futures.items():
            try:
                result = future.result()
                (summary.skipped if result.skipped else summary.completed).append(provider_user_id)
            except Exception as exc:  # one user's failure never stops the others
                logger.error("scheduled sync of %s failed: %s", provider_user_id, exc)
                summary.failed[provider_user_id] = str(exc)
    logger.info(
        "%d syncs completed, %d skipped (already running), %d failed",
        len(summary.completed),
        len(summary.skipped),
        len(summary.failed),
    )
    return summary


if __name__ == "__main__":
    print(periodic_email_sync())
