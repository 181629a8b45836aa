"""Opening and finishing a `SyncRun` inside the `email_sync` flow (the Prefect side of it).

`open_sync_run`: tag the flow run, resolve the user (a retried task), create the pending document, take
the lease (a retried task) and say how the run's session is made. `finish_sync`: record the cursors the
plan leaves for the next sync.
"""

from __future__ import annotations

import os
import socket

from prefect import get_run_logger
from prefect.client.orchestration import get_client
from prefect.context import FlowRunContext

from emailsync.config import get_settings
from emailsync.enrichment import get_enricher
from emailsync.errors import describe_error
from emailsync.firestore.emails import EmailRepository
from emailsync.firestore.progress import get_progress_writer
from emailsync.firestore.sync_state import SyncStateRepository
from emailsync.firestore.users import CredentialsRepository, ProviderUserRepository
from emailsync.gmail.client import GmailClient
from emailsync.models import SyncTrigger
from emailsync.reachability import check_firestore, check_gmail
from emailsync.sync.ids import new_sync_id
from emailsync.sync.pipeline import SyncSession
from emailsync.sync.plan import SyncPlan
from emailsync.sync.run import SyncRun
from tasks.progress import ProgressArtifacts
from tasks.storage import acquire_sync_lease, record_sync_cursors, resolve_provider_user

# Prefect 3's @flow takes no tags: every run tags itself (the trigger is only known per run).
FLOW_RUN_TAGS = ("emailsync", "gmail")


def open_sync_run(provider_user_id: str, trigger: str, sync_id: str | None) -> SyncRun:
    """The run of this flow: user resolved, pending document written, lease taken (or `run.skipped`)."""
    logger = get_run_logger()
    settings = get_settings()
    trigger_value = SyncTrigger(trigger)
    flow_run_id = tag_flow_run(*FLOW_RUN_TAGS, f"user:{provider_user_id}", f"trigger:{trigger_value.value}")
    progress = get_progress_writer()
    check_firestore(settings)  # unreachable: fail in seconds, not after minutes of retries
    try:
        target = resolve_provider_user(provider_user_id)
    except Exception as exc:
        # The app must see why: a failed document (the watcher's pending one, or a new one) whenever the
        # provider user is known.
        _fail_unstarted(provider_user_id, trigger_value, sync_id, exc)
        raise
    explicit_sync_id = sync_id is not None
    sync_id = sync_id or new_sync_id(provider_user_id, trigger_value)
    run = SyncRun(
        sync_id=sync_id,
        provider_user_id=provider_user_id,
        trigger=trigger_value,
        app_user_id=target.user.app_user_id,
        family_id=target.user.family_id,
        progress=progress,
        sync_state=SyncStateRepository(),
        lease_timeout_seconds=settings.lease_timeout_seconds,
        lease_renew_seconds=settings.lease_heartbeat_seconds,
        flow_run_id=flow_run_id,
        logger=logger,
        view=ProgressArtifacts(provider_user_id, sync_id),
    )
    # A sync id given to the flow is this flow run's own (the watcher's pending doc, or the parameter a
    # retried run keeps): its failed or interrupted document is reopened and the sync resumes.
    run.create_pending(reopen=explicit_sync_id)
    owner = f"{socket.gethostname()}:{os.getpid()}:{flow_run_id or 'no-flow-run'}"
    try:
        attempt = acquire_sync_lease(run, owner)
    except Exception as exc:
        run.fail(exc)
        raise
    run.hold(attempt)

    def connect() -> SyncSession:
        check_gmail(settings)  # an unreachable Gmail fails in seconds, with a failed document
        return SyncSession(
            provider_user_id=provider_user_id,
            app_user_id=target.user.app_user_id,
            family_id=target.user.family_id,
            gmail=GmailClient(
                target.credentials,
                settings,
                # refreshed tokens are written back to providerCredentials (only when they changed)
                on_token_refresh=lambda refreshed, refreshed_with: CredentialsRepository().save_refreshed(
                    provider_user_id, refreshed, refreshed_with
                ),
            ),
            emails=EmailRepository(),
            enricher=get_enricher(settings),
        )

    run.connect_with(connect)
    return run


def _fail_unstarted(
    provider_user_id: str, trigger: SyncTrigger, sync_id: str | None, exc: BaseException
) -> None:
    """The failed document of a sync that could not start (no credentials, say)."""
    logger = get_run_logger()
    progress = get_progress_writer()
    try:
        user = ProviderUserRepository().get(provider_user_id)
        if user is None and sync_id is None:
            return  # no document can name whose sync this was
        if sync_id is None:
            sync_id = new_sync_id(provider_user_id, trigger)
        if user is not None:
            progress.create_pending(sync_id, user.app_user_id, user.family_id, provider_user_id, trigger)
        progress.fail(sync_id, f"could not start the sync: {describe_error(exc)}")
    except Exception as write_error:
        logger.warning("could not record the failed start of a sync of %s: %s", provider_user_id, write_error)


def finish_sync(run: SyncRun, plan: SyncPlan) -> None:
    """Where the next sync starts: a finished backfill clears its cursor; either way history moves on."""
    completion = plan.completion()
    record_sync_cursors(
        run.provider_user_id,
        history_id=completion.history_id,
        backfill_completed=completion.backfill_completed,
    )


def label_flow_run(run: SyncRun) -> None:
    """Once the plan is chosen: the mode joins the flow run's tags and name (user, trigger, mode)."""
    mode = run.summary.mode
    if mode is None:
        return
    tag_flow_run(
        f"mode:{mode.value}", name=f"email-sync-{run.provider_user_id}-{run.trigger.value}-{mode.value}"
    )


def tag_flow_run(*tags: str, name: str | None = None) -> str | None:
    """Add `tags` to this flow run (and rename it); returns the flow run id."""
    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        return None
    flow_run = context.flow_run
    try:
        merged = sorted({*flow_run.tags, *tags})
        with get_client(sync_client=True) as client:
            client.update_flow_run(flow_run.id, tags=merged, name=name)
        flow_run.tags = merged  # the next call adds to these
        if name is not None:
            flow_run.name = name
    except Exception as exc:  # a missing tag must not stop a sync
        get_run_logger().warning("could not tag flow run %s: %s", flow_run.id, exc)
    return str(flow_run.id)
