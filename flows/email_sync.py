"""`email_sync`: back-fill or incrementally sync one provider user's Gmail into Firestore.

    resolve user + credentials → pending progress doc → per-user lease (skip if another sync holds it)
    → Prefect slot `email-sync:{providerUserId}` → incremental (history since lastHistoryId) or backfill
    (weekly windows newest first, resumed from the checkpoint) → completed / failed progress.

Batches are pipelined: while `process_email_batch` parses, enriches and stores batch N, the
`fetch_email_batch` task is already listing and downloading batch N+1, so the Gmail quota (the real
bottleneck) never waits for the CPU-bound enrichment. Two task runs per batch keep Prefect's
overhead small. Run one sync from a shell with `python -m flows.email_sync PROVIDER_USER_ID`.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from prefect import flow, get_run_logger
from prefect.client.orchestration import get_client
from prefect.context import FlowRunContext
from prefect.futures import PrefectFuture

from emailsync.config import Settings, get_settings
from emailsync.enrichment import get_enricher
from emailsync.errors import AuthorizationRevokedError, HistoryExpiredError, LeaseHeldError, RetriableError
from emailsync.firestore.progress import ProgressWriter, get_progress_writer
from emailsync.firestore.repositories import EmailRepository, SyncStateRepository
from emailsync.gmail.client import GmailClient
from emailsync.models import BackfillCursor, SyncMode, SyncState, SyncTrigger
from emailsync.sync.ids import new_sync_id
from emailsync.sync.pipeline import BatchOutcome, ProgressPoint, SyncSession
from emailsync.sync.summary import SyncSummary
from emailsync.sync.windows import lookback_bound
from tasks.batch import process_email_batch
from tasks.common import FetchedBatchRef, SyncResources
from tasks.concurrency import user_sync_slot
from tasks.enrichment import warm_up_enricher
from tasks.gmail import (
    estimate_messages_since,
    fetch_email_batch,
    find_backfill_start,
    list_history_changes,
    read_gmail_profile,
)
from tasks.progress import ProgressArtifacts
from tasks.storage import (
    SyncTarget,
    acquire_sync_lease,
    record_sync_cursors,
    release_sync_lease,
    resolve_provider_user,
)

T = TypeVar("T")

# Prefect 3's @flow takes no tags: every run tags itself (the trigger is only known per run).
FLOW_RUN_TAGS = ("emailsync", "gmail")


@flow(
    name="email-sync",
    flow_run_name="email-sync-{provider_user_id}",
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
    logger = get_run_logger()
    settings = get_settings()
    trigger_value = SyncTrigger(trigger)
    flow_run_id = _tag_flow_run(*FLOW_RUN_TAGS, f"trigger:{trigger_value.value}")
    progress = get_progress_writer()

    try:
        target = resolve_provider_user(provider_user_id)
    except Exception as exc:
        if sync_id is not None:  # the watcher created a pending document: it must not stay pending
            _fail_quietly(progress, sync_id, f"could not start the sync: {exc}")
        raise
    sync_id = sync_id or new_sync_id(provider_user_id, trigger_value)
    progress.create_pending(
        sync_id, target.user.app_user_id, target.user.family_id, provider_user_id, trigger_value
    )
    summary = SyncSummary(
        sync_id=sync_id, provider_user_id=provider_user_id, trigger=trigger_value, flow_run_id=flow_run_id
    )

    owner = f"{socket.gethostname()}:{os.getpid()}:{flow_run_id or 'no-flow-run'}"
    try:
        lease = acquire_sync_lease(provider_user_id, sync_id, owner, settings.lease_timeout_seconds)
    except Exception as exc:
        _fail_quietly(progress, sync_id, describe_failure(exc))
        raise
    if not lease.acquired:
        active = lease.state.active_sync_id
        logger.info("skipped: sync %s already running for %s", active, provider_user_id)
        progress.complete(sync_id, skipped=True, active_sync_id=active, flow_run_id=flow_run_id)
        summary.skipped, summary.active_sync_id = True, active
        return summary

    if lease.taken_over_from:
        # Its worker died (or hung) without finishing its progress document: say so instead of leaving it
        # "in progress" forever; this sync resumes the work from the checkpoint. In the background, as a
        # worker killed inside a progress write can leave that document locked for a while.
        logger.warning("sync %s took over the expired lease of sync %s", sync_id, lease.taken_over_from)
        threading.Thread(
            target=_mark_interrupted,
            args=(progress, lease.taken_over_from, sync_id),
            name=f"mark-interrupted-{lease.taken_over_from}",
            daemon=True,
        ).start()

    started = time.perf_counter()
    resources: SyncResources | None = None
    artifacts = ProgressArtifacts(provider_user_id, sync_id)
    try:
        resources = SyncResources(
            SyncSession(
                sync_id=sync_id,
                provider_user_id=provider_user_id,
                app_user_id=target.user.app_user_id,
                family_id=target.user.family_id,
                gmail=GmailClient(target.credentials, settings),
                emails=EmailRepository(),
                sync_state=SyncStateRepository(),
                progress=progress,
                enricher=get_enricher(settings),
                lease_timeout_seconds=settings.lease_timeout_seconds,
            )
        )
        with user_sync_slot(
            provider_user_id,
            wait_seconds=settings.lease_timeout_seconds,
            lease_seconds=settings.lease_timeout_seconds,
        ):
            _run(
                resources,
                target,
                lease.state,
                summary,
                artifacts,
                settings,
                lookback_weeks=settings.lookback_weeks if lookback_weeks is None else lookback_weeks,
                batch_size=batch_size or settings.batch_size,
            )
        summary.timings.wall_seconds = time.perf_counter() - started
        progress.complete(sync_id, trigger=trigger_value, **summary.progress_details())
        artifacts.finish(summary)
        logger.info(
            "sync %s (%s) of %s completed: %d emails processed, %d stored, %d batches in %.1fs",
            sync_id,
            summary.mode.value if summary.mode else "?",
            provider_user_id,
            summary.emails_processed,
            summary.emails_stored,
            summary.batches,
            summary.timings.wall_seconds,
        )
        return summary
    except BaseException as exc:
        cause = describe_failure(exc)
        logger.error("sync %s of %s failed: %s", sync_id, provider_user_id, cause)
        _fail_quietly(progress, sync_id, cause, **summary.progress_details())
        raise
    finally:
        if resources is not None:
            resources.release_all()
        try:
            release_sync_lease(provider_user_id, sync_id)
        except Exception as exc:  # the lease then expires on its own after lease_timeout_seconds
            logger.warning("could not release the lease of sync %s: %s", sync_id, exc)


def _run(
    resources: SyncResources,
    target: SyncTarget,
    state: SyncState,
    summary: SyncSummary,
    artifacts: ProgressArtifacts,
    settings: Settings,
    *,
    lookback_weeks: int | None,
    batch_size: int,
) -> None:
    logger = get_run_logger()
    session = resources.session
    if state.backfill_completed and state.last_history_id:
        try:
            changes = list_history_changes(resources, state.last_history_id)
        except HistoryExpiredError as exc:
            logger.warning("history of %s expired (%s): one full backfill", target.provider_user_id, exc)
            summary.fell_back_to_backfill = True
        else:
            summary.mode = SyncMode.INCREMENTAL
            summary.emails_total_estimate = len(changes.added_ids)
            session.progress.start(
                session.sync_id, SyncMode.INCREMENTAL, summary.flow_run_id, summary.emails_total_estimate
            )
            artifacts.start()
            if changes.added_ids:  # an idle user costs one history call, not a model load
                warm_up_enricher.submit(session.enricher)
            chunks = iter(
                [changes.added_ids[i : i + batch_size] for i in range(0, len(changes.added_ids), batch_size)]
            )

            def next_chunk(_previous: FetchedBatchRef | None) -> dict[str, Any] | None:
                chunk = next(chunks, None)
                return {"ids": chunk} if chunk else None

            _pipeline(resources, summary, artifacts, next_chunk, batch_size, checkpoint=False)
            record_sync_cursors(
                target.provider_user_id, history_id=changes.history_id, backfill_completed=False
            )
            return
    warm_up_enricher.submit(session.enricher)  # loads the model while the first batch downloads
    _backfill(
        resources, target, state, summary, artifacts, lookback_weeks=lookback_weeks, batch_size=batch_size
    )


def _backfill(
    resources: SyncResources,
    target: SyncTarget,
    state: SyncState,
    summary: SyncSummary,
    artifacts: ProgressArtifacts,
    *,
    lookback_weeks: int | None,
    batch_size: int,
) -> None:
    session = resources.session
    now = datetime.now(UTC)
    bound = lookback_bound(now, lookback_weeks)
    profile = read_gmail_profile(resources)
    # A checkpoint exists only when a backfill was interrupted (completion clears it): resume from it.
    cursor: BackfillCursor | None = state.backfill_cursor
    summary.mode = SyncMode.BACKFILL
    summary.resumed = cursor is not None
    # Messages arriving while we walk are newer than the walk's start: the next incremental sync takes
    # them from the historyId of the moment the backfill began (kept in the cursor across resumes).
    start_history_id = (cursor.start_history_id if cursor else None) or profile.history_id
    summary.emails_total_estimate = (
        estimate_messages_since(resources, bound) if bound is not None else profile.messages_total
    )
    session.progress.start(
        session.sync_id, SyncMode.BACKFILL, summary.flow_run_id, summary.emails_total_estimate
    )
    artifacts.start()
    if cursor is None:
        cursor = find_backfill_start(resources, now, bound, start_history_id)
    else:
        summary.emails_processed, summary.batches = cursor.emails_processed, cursor.batches

    def next_position(previous: FetchedBatchRef | None) -> dict[str, Any] | None:
        # The walk goes on from where the previous batch's listing ended, known as soon as it is fetched.
        position = cursor if previous is None else previous.cursor_after
        return {"cursor": position, "bound": bound} if position is not None else None

    _pipeline(resources, summary, artifacts, next_position, batch_size, checkpoint=True)
    record_sync_cursors(target.provider_user_id, history_id=start_history_id, backfill_completed=True)


def _pipeline(
    resources: SyncResources,
    summary: SyncSummary,
    artifacts: ProgressArtifacts,
    next_request: Callable[[FetchedBatchRef | None], dict[str, Any] | None],
    batch_size: int,
    *,
    checkpoint: bool,
) -> None:
    """Fetch batch N+1 while batch N is processed. `next_request(previous batch)` gives the fetch
    arguments of the following batch (None: no more batches)."""
    timer = _OrchestrationTimer()
    point = ProgressPoint(
        emails_processed=summary.emails_processed,
        batches=summary.batches,
        total_estimate=summary.emails_total_estimate,
    )

    def submit(request: dict[str, Any] | None) -> PrefectFuture[FetchedBatchRef] | None:
        return (
            timer.submit(fetch_email_batch, resources, batch_size=batch_size, **request) if request else None
        )

    pending = submit(next_request(None))
    while pending is not None:
        batch: FetchedBatchRef = pending.result()
        timer.fetched(batch.fetch_seconds)
        pending = submit(next_request(batch))
        outcome = timer.call(
            lambda batch=batch, point=point: process_email_batch(
                resources, batch, point, checkpoint=checkpoint
            ),
            domain_seconds=lambda outcome: outcome.wall_seconds,
        )
        point = outcome.progress
        _add_outcome(summary, batch, outcome)
        artifacts.show(point.percent)
    summary.timings.orchestration_seconds += timer.overhead_seconds


def _add_outcome(summary: SyncSummary, batch: FetchedBatchRef, outcome: BatchOutcome) -> None:
    summary.emails_processed = outcome.progress.emails_processed
    summary.batches = outcome.progress.batches
    summary.emails_fetched += outcome.emails_fetched
    summary.emails_stored += outcome.emails_stored
    summary.emails_enriched += outcome.emails_enriched
    summary.parse_errors += outcome.parse_errors
    summary.current_window = outcome.window or summary.current_window
    summary.add_tags(outcome.tag_counts)
    timings = summary.timings
    timings.fetch_seconds += batch.fetch_seconds
    timings.parse_seconds += outcome.parse_seconds
    timings.enrich_seconds += outcome.enrich_seconds
    timings.store_seconds += outcome.store_seconds


class _OrchestrationTimer:
    """Time Prefect spends around the domain calls: task-run wall time minus the time inside them."""

    def __init__(self) -> None:
        self.overhead_seconds = 0.0
        self._submitted_at: float | None = None
        self._done_at: float | None = None
        self._lock = threading.Lock()

    def submit(self, task: Any, *args: Any, **kwargs: Any) -> PrefectFuture[Any]:
        self._submitted_at, self._done_at = time.perf_counter(), None
        future = task.submit(*args, **kwargs)
        future.add_done_callback(self._on_done)
        return future

    def _on_done(self, _future: Any) -> None:
        with self._lock:
            self._done_at = time.perf_counter()

    def fetched(self, domain_seconds: float) -> None:
        with self._lock:
            done_at = self._done_at or time.perf_counter()
        if self._submitted_at is not None:
            self.overhead_seconds += max(0.0, done_at - self._submitted_at - domain_seconds)

    def call(self, run: Callable[[], T], domain_seconds: Callable[[T], float]) -> T:
        started = time.perf_counter()
        result = run()
        self.overhead_seconds += max(0.0, time.perf_counter() - started - domain_seconds(result))
        return result


def describe_failure(exc: BaseException) -> str:
    """The human-readable cause shown in `syncProgress.error`."""
    if isinstance(exc, AuthorizationRevokedError):
        return str(exc)
    if isinstance(exc, LeaseHeldError):
        return f"another sync took over: {exc}"
    if isinstance(exc, RetriableError):
        return f"Gmail or Firestore kept failing after retries: {exc}"
    if isinstance(exc, KeyboardInterrupt | SystemExit):
        return "the sync was interrupted"
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _fail_quietly(progress: ProgressWriter, sync_id: str, cause: str, **details: Any) -> None:
    """Record the failure; a progress document already finished (or missing) must not hide the cause."""
    try:
        progress.fail(sync_id, cause, **details)
    except Exception as exc:
        get_run_logger().warning("could not mark sync %s failed: %s", sync_id, exc)


def _mark_interrupted(progress: ProgressWriter, interrupted_sync_id: str, resumed_by: str) -> None:
    try:
        progress.fail(
            interrupted_sync_id,
            f"the sync was interrupted (its worker stopped); sync {resumed_by} resumed it",
            resumed_by=resumed_by,
        )
    except Exception as exc:  # already finished, or still locked by the dead worker
        logging.getLogger(__name__).info("sync %s not marked interrupted: %s", interrupted_sync_id, exc)


def _tag_flow_run(*tags: str) -> str | None:
    """Add `tags` to this flow run; returns the flow run id."""
    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        return None
    flow_run = context.flow_run
    try:
        with get_client(sync_client=True) as client:
            client.update_flow_run(flow_run.id, tags=sorted({*flow_run.tags, *tags}))
    except Exception as exc:  # a missing tag must not stop a sync
        get_run_logger().warning("could not tag flow run %s: %s", flow_run.id, exc)
    return str(flow_run.id)


# ---------------------------------------------------------------------------------------------- CLI


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
