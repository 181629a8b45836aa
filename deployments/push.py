"""Gmail push in `emailsync watch` and `emailsync serve` (when `EMAILSYNC_GMAIL_PUSH_TOPIC` is set).

`PushService` = the streaming-pull listener (`emailsync.push.listener`) + per-user coalescing of syncs
+ the watch registrations: a connect the watcher handles registers a watch, a disconnect stops it, and
a renewal pass on start and every 6 hours (what the `renew-gmail-watches` deployment does on its
schedule) renews what is due and covers users connected before push was configured. A notification's
sync is an `email-sync` run with trigger "push": a run of the deployment when a Prefect API is
configured (waited for, so bursts coalesce), the flow in-process otherwise.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from google.cloud import firestore

from emailsync.config import get_settings
from emailsync.deployment_specs import EMAIL_SYNC_DEPLOYMENT
from emailsync.firestore.client import get_firestore_client
from emailsync.firestore.progress import get_progress_writer
from emailsync.firestore.sync_state import SyncStateRepository
from emailsync.firestore.users import ProviderUserRepository
from emailsync.lifecycle.rules import automatic_sync_blocked
from emailsync.models import SyncTrigger
from emailsync.push.coalesce import RunOutcome, SyncCoalescer
from emailsync.push.listener import PushListener
from emailsync.push.pubsub import PushTarget, push_target
from emailsync.push.watches import GmailWatches, WatchRepository, normalize_address
from emailsync.sync.ids import new_sync_id

logger = logging.getLogger("emailsync.push")

# How often a running listener process renews the watches that are due (as renew-gmail-watches does).
RENEW_EVERY_SECONDS = 6 * 3600.0


class AddressBook:
    """Notification address → provider user id (by the address Gmail's profile reported; cached)."""

    def __init__(self, repository: WatchRepository) -> None:
        self.repository = repository
        self._cache: dict[str, str] = {}

    def __call__(self, address: str) -> str | None:
        key = normalize_address(address)
        if key in self._cache:
            return self._cache[key]
        provider_user_id = self.repository.provider_user_for(key)
        if provider_user_id is not None:  # unknown ones are asked again: the user may connect any minute
            self._cache[key] = provider_user_id
        return provider_user_id


class PushSyncRunner:
    """One push-triggered sync, run to its end (so the coalescer knows when a follow-up may start)."""

    def __init__(
        self,
        client: firestore.Client,
        *,
        deployment_name: str | None = None,
        api_url: str | None = None,
    ) -> None:
        self.client = client
        self.deployment_name = deployment_name  # None: the flow in-process
        self.api_url = api_url
        self.users = ProviderUserRepository(client)
        self.states = SyncStateRepository(client)
        self._context = contextvars.copy_context()

    def __call__(self, provider_user_id: str) -> RunOutcome:
        user = self.users.get(provider_user_id)
        if automatic_sync_blocked(user) is not None:
            logger.info(
                "push for %s ignored: Gmail not connected (or needs reauthorization)", provider_user_id
            )
            return RunOutcome.IGNORED
        state = self.states.get(provider_user_id)
        if state.active_sync_id and state.lease_expires_at and state.lease_expires_at > datetime.now(UTC):
            return RunOutcome.BUSY  # its changes are picked up by a run after that sync
        run = self._run_deployment if self.deployment_name else self._run_in_process
        skipped = self._context.copy().run(run, provider_user_id, user)
        return RunOutcome.BUSY if skipped else RunOutcome.DONE

    @staticmethod
    def _run_in_process(provider_user_id: str, _user: Any) -> bool:
        from flows.email_sync import email_sync

        try:
            return bool(email_sync(provider_user_id, trigger=SyncTrigger.PUSH.value).skipped)
        except Exception as exc:  # recorded in syncProgress by the flow; the sweep retries the user
            logger.warning("push sync of %s failed: %s", provider_user_id, exc)
            return False

    def _run_deployment(self, provider_user_id: str, user: Any) -> bool:
        from prefect.deployments import run_deployment
        from prefect.settings import PREFECT_API_URL, temporary_settings

        assert self.deployment_name is not None
        progress = get_progress_writer()
        sync_id = new_sync_id(provider_user_id, SyncTrigger.PUSH)
        progress.create_pending(sync_id, user.app_user_id, user.family_id, provider_user_id, SyncTrigger.PUSH)
        settings = temporary_settings(updates={PREFECT_API_URL: self.api_url}) if self.api_url else None
        try:
            with settings or contextlib.nullcontext():
                run_deployment(
                    self.deployment_name,
                    parameters={
                        "provider_user_id": provider_user_id,
                        "trigger": SyncTrigger.PUSH.value,
                        "sync_id": sync_id,
                    },
                    timeout=None,  # wait: a follow-up must not start before this run ends
                    poll_interval=1,
                    as_subflow=False,
                    tags=["emailsync", "trigger:push"],
                )
        except Exception as exc:
            logger.warning("push sync of %s could not run: %s", provider_user_id, exc)
            with contextlib.suppress(Exception):
                progress.fail(sync_id, f"could not start the sync: {exc}")
            return False
        return _was_skipped(progress.get(sync_id))


class PushService:
    """start() / stop(). `on_watcher_decision` is the `GmailConnectWatcher(on_decision=...)` hook."""

    def __init__(
        self,
        target: PushTarget,
        client: firestore.Client | None = None,
        *,
        runner: PushSyncRunner | None = None,
        via_deployment: bool | None = None,
        max_syncs: int = 8,
        renew_on_start: bool = True,
        renew_every_seconds: float | None = RENEW_EVERY_SECONDS,
    ) -> None:
        self.target = target
        self.client = client or get_firestore_client()
        self.watches = GmailWatches(target.topic, self.client)
        if runner is None:
            # As the watcher's launcher: runs of the deployment when a Prefect API is configured.
            if via_deployment is None:
                via_deployment = bool(get_settings().prefect_api_url)
            deployment = EMAIL_SYNC_DEPLOYMENT if via_deployment else None
            runner = PushSyncRunner(self.client, deployment_name=deployment)
        self.coalescer = SyncCoalescer(runner, max_workers=max_syncs)
        self.listener = PushListener(target, AddressBook(self.watches.repository), self.coalescer)
        self.renew_on_start = renew_on_start
        self.renew_every_seconds = renew_every_seconds
        self._registrations = ThreadPoolExecutor(max_workers=2, thread_name_prefix="push-watch")
        self._stopped = threading.Event()

    @classmethod
    def from_settings(cls, **kwargs: Any) -> PushService | None:
        """The service when a push topic is configured, else None (polling only)."""
        target = push_target(get_settings())
        return cls(target, **kwargs) if target is not None else None

    def start(self) -> PushService:
        self._stopped.clear()
        self.listener.start()
        if self.renew_on_start:
            self._registrations.submit(self._renew_all)
        if self.renew_every_seconds:
            # `emailsync watch` keeps the watches alive by itself too (as the renew-gmail-watches
            # schedule does where the deployments run): renewing only what is due, twice is harmless.
            threading.Thread(target=self._renew_periodically, name="push-renewal", daemon=True).start()
        return self

    def _renew_periodically(self) -> None:
        assert self.renew_every_seconds
        while not self._stopped.wait(self.renew_every_seconds):
            self._renew_all()

    def stop(self) -> None:
        self._stopped.set()
        self.listener.stop()
        self.coalescer.shutdown(wait=False)
        self._registrations.shutdown(wait=False, cancel_futures=True)

    def _renew_all(self) -> None:
        try:
            for line in self.watches.renew().summary_lines():
                logger.info("gmail watches %s", line)
        except Exception:
            logger.exception("renewing the Gmail watches failed (the renew-gmail-watches schedule retries)")

    def on_watcher_decision(self, decision: Any) -> None:
        """A connect registers the user's watch, a disconnect stops it (off the watcher's thread)."""
        if decision.action == "started":
            self._registrations.submit(self._guarded, self.watches.register, decision.provider_user_id)
        elif decision.action == "disconnected":
            self._registrations.submit(self._guarded, self.watches.stop, decision.provider_user_id)

    @staticmethod
    def _guarded(action: Any, provider_user_id: str) -> None:
        try:
            action(provider_user_id)
        except Exception as exc:  # the renewal pass registers it later
            logger.warning("Gmail watch of %s: %s failed: %s", provider_user_id, action.__name__, exc)


def _was_skipped(document: Any) -> bool:
    """Whether a finished run was skipped because another sync held the lease (its own status, or
    `details.skipped` on a completed document)."""
    if document is None:
        return False
    if str(getattr(document.status, "value", document.status)) == "skipped":
        return True
    return bool((document.details.model_extra or {}).get("skipped"))
