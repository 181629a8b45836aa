"""How the watcher starts a sync: a run of the `email-sync` deployment (`DeploymentLauncher`, when a
Prefect API is configured) or the flow itself in-process on a bounded worker pool (`InProcessLauncher`).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from pydantic import BaseModel

from emailsync.config import get_settings
from emailsync.deployment_specs import EMAIL_SYNC_DEPLOYMENT
from emailsync.firestore.progress import get_progress_writer
from emailsync.models import SyncTrigger

logger = logging.getLogger("emailsync.watcher")


class SyncRequest(BaseModel):
    """What the watcher hands to a launcher: one sync of one provider user, its progress doc exists."""

    provider_user_id: str
    sync_id: str
    trigger: SyncTrigger = SyncTrigger.CONNECT


class SyncLauncher(Protocol):
    """Starts a flow run for a request without blocking the caller."""

    def launch(self, request: SyncRequest) -> None: ...

    def shutdown(self, wait: bool) -> None: ...


class DeploymentLauncher:
    """Creates a flow run of the `email-sync` deployment; a Prefect worker picks it up.

    `run_deployment(..., timeout=0)` returns as soon as the run is scheduled, but it is still an
    HTTP round trip to the Prefect API, so it runs on a small pool, off the listener thread.
    """

    def __init__(
        self, deployment_name: str = EMAIL_SYNC_DEPLOYMENT, max_workers: int = 2, api_url: str | None = None
    ) -> None:
        self.deployment_name = deployment_name
        # None = the process's Prefect settings (PREFECT_API_URL); explicit for tests and benchmarks.
        self.api_url = api_url
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="watcher-deploy")

    def launch(self, request: SyncRequest) -> None:
        self._pool.submit(self._run, request)

    def _run(self, request: SyncRequest) -> None:
        from prefect.deployments import run_deployment
        from prefect.settings import PREFECT_API_URL, temporary_settings

        settings = temporary_settings(updates={PREFECT_API_URL: self.api_url}) if self.api_url else None
        try:
            with settings or contextlib.nullcontext():
                flow_run = run_deployment(
                    self.deployment_name,
                    parameters={
                        "provider_user_id": request.provider_user_id,
                        "trigger": request.trigger.value,
                        "sync_id": request.sync_id,
                    },
                    timeout=0,
                    as_subflow=False,
                    tags=["emailsync", f"trigger:{request.trigger.value}"],
                )
            logger.info(
                "flow run %s of %s scheduled for %s (sync %s)",
                flow_run.id,
                self.deployment_name,
                request.provider_user_id,
                request.sync_id,
            )
        except Exception as exc:
            logger.exception("could not start %s for %s", self.deployment_name, request.provider_user_id)
            _fail_progress(request.sync_id, f"could not start the sync: {exc}")

    def shutdown(self, wait: bool) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=not wait)


class InProcessLauncher:
    """Runs the `email_sync` flow in this process on `max_workers` threads (no Prefect server needed;
    Prefect then starts its temporary local API on first use).

    The threads are daemons: `shutdown(wait=False)` abandons a running sync instead of holding the
    process open. That is safe by design: its lease expires and the next trigger resumes it from
    the checkpoint. Syncs still queued are marked failed so no progress doc stays pending forever.
    """

    def __init__(self, max_workers: int = 4) -> None:
        self._queue: queue.Queue[SyncRequest | None] = queue.Queue()
        # Flows run with the Prefect settings of whoever built the launcher (e.g. a temporary API set
        # with `temporary_settings`); new threads would otherwise start with an empty context.
        self._context = contextvars.copy_context()
        self._threads = [
            threading.Thread(target=self._work, name=f"watcher-sync-{n}", daemon=True)
            for n in range(max_workers)
        ]
        for thread in self._threads:
            thread.start()

    def launch(self, request: SyncRequest) -> None:
        self._queue.put(request)

    def _work(self) -> None:
        while (request := self._queue.get()) is not None:
            self._context.copy().run(self._run, request)

    @staticmethod
    def _run(request: SyncRequest) -> None:
        from flows.email_sync import email_sync

        try:
            summary = email_sync(
                request.provider_user_id, trigger=request.trigger.value, sync_id=request.sync_id
            )
            logger.info("sync %s of %s finished: %s", request.sync_id, request.provider_user_id, summary)
        except Exception:
            # The flow records its own failure in syncProgress; this line is for the operator.
            logger.exception("sync %s of %s failed", request.sync_id, request.provider_user_id)

    def shutdown(self, wait: bool) -> None:
        if not wait:
            while True:
                try:
                    request = self._queue.get_nowait()
                except queue.Empty:
                    break
                if request is not None:
                    _fail_progress(request.sync_id, "the watcher stopped before this sync started")
        for _ in self._threads:
            self._queue.put(None)
        if wait:
            for thread in self._threads:
                thread.join()


def default_launcher() -> SyncLauncher:
    """The deployment when a Prefect API is configured, else the flow in-process."""
    if get_settings().prefect_api_url:
        return DeploymentLauncher()
    return InProcessLauncher()


def _fail_progress(sync_id: str, error: str) -> None:
    with contextlib.suppress(Exception):
        get_progress_writer().fail(sync_id, error)
