"""The Gmail-connect watcher: a Firestore listener that starts a sync when a user connects Gmail.

It listens to the query `providerUsers where services.gmail.active == true`, so Firestore itself
classifies every event: ADDED = a connect (active turned true), REMOVED = a disconnect, MODIFIED =
an unrelated update of a connected user (never a sync). Per-user state (the `connectedAt` last
handled) drops re-delivered events, so one connect starts exactly one sync.

For each connect it FIRST writes the `pending` syncProgress document (the web app shows it at
once), THEN starts a flow run: of the `email-sync/email-sync` deployment when a Prefect API is
configured (`PREFECT_API_URL`), else of the flow itself, in-process on a bounded worker pool. The
listener thread only decides and hands off; it never waits for Prefect or for a sync.

The first snapshot after (re)subscribing lists every active user: that is the restart catch-up.
Users without a completed backfill and without a live sync are synced; the others are skipped.
A watch that the client library closes on a stream error is detected and re-subscribed with backoff.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter
from google.cloud.firestore_v1.watch import Watch
from pydantic import BaseModel

from deployments.connect_decision import decide_connect
from deployments.disconnect import DisconnectHandler
from deployments.launchers import (
    DeploymentLauncher,
    InProcessLauncher,
    SyncLauncher,
    SyncRequest,
    default_launcher,
)
from emailsync.config import get_settings
from emailsync.deployment_specs import EMAIL_SYNC_DEPLOYMENT
from emailsync.firestore.client import get_firestore_client
from emailsync.firestore.progress import ProgressWriter
from emailsync.firestore.sync_state import SyncStateRepository
from emailsync.firestore.users import ProviderUserRepository
from emailsync.lifecycle import automatic_sync_blocked
from emailsync.models import ProviderUser, SyncProgress, SyncStatus, SyncTrigger
from emailsync.sync.ids import new_sync_id

__all__ = [
    "EMAIL_SYNC_DEPLOYMENT",
    "DeploymentLauncher",
    "GmailConnectWatcher",
    "InProcessLauncher",
    "SyncLauncher",
    "SyncRequest",
    "WatcherDecision",
    "default_launcher",
]

logger = logging.getLogger("emailsync.watcher")


class WatcherDecision(BaseModel):
    """One logged decision (kept in memory too, so tests and the demo can inspect what happened)."""

    provider_user_id: str
    action: str  # "started" | "skipped" | "disconnected"
    reason: str
    sync_id: str | None = None
    at: datetime


class GmailConnectWatcher:
    """`emailsync watch`: start(), then stop() for a clean shutdown (also a context manager)."""

    def __init__(
        self,
        client: firestore.Client | None = None,
        *,
        launcher: SyncLauncher | None = None,
        progress_writer: ProgressWriter | None = None,
        resubscribe_initial_delay: float = 0.5,
        resubscribe_max_delay: float = 30.0,
        health_check_interval: float = 0.5,
        stale_pending_after: timedelta | None = None,
        pending_start_timeout: timedelta | None = None,
        pending_sweep_interval: float = 60.0,
        on_decision: Callable[[WatcherDecision], None] | None = None,
        disconnects: DisconnectHandler | None = None,
    ) -> None:
        self.client = client or get_firestore_client()
        # What a disconnect does besides stopping the user's running sync: push watch, purge policy.
        self.disconnects = disconnects or DisconnectHandler(self.client)
        self.launcher = launcher or default_launcher()
        self.progress = progress_writer or ProgressWriter(self.client)
        self.sync_state = SyncStateRepository(self.client)
        self.resubscribe_initial_delay = resubscribe_initial_delay
        self.resubscribe_max_delay = resubscribe_max_delay
        self.health_check_interval = health_check_interval
        # A pending doc older than this is not a live sync (no flow behind it): catch-up starts a new one.
        self.stale_pending_after = stale_pending_after or timedelta(
            seconds=get_settings().lease_timeout_seconds
        )
        # A pending doc whose run has not started after this is failed, with the reason.
        self.pending_start_timeout = pending_start_timeout or timedelta(
            seconds=get_settings().pending_start_timeout_seconds
        )
        self.pending_sweep_interval = pending_sweep_interval
        self._last_pending_sweep = float("-inf")
        self.on_decision = on_decision

        # The recent decisions (bounded: a watcher runs for months), for tests, the demo and debugging.
        self.decisions: deque[WatcherDecision] = deque(maxlen=10_000)
        self.subscriptions = 0  # how many times we subscribed (1 + re-subscriptions)
        self._handled: dict[str, str] = {}  # provider user id -> connect key last handled
        self._first_snapshot_pending = False
        self._ever_subscribed = False
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._callback_failed = threading.Event()
        self._watch: Watch | None = None
        self._supervisor: threading.Thread | None = None

    # ----------------------------------------------------------------------------- lifecycle

    def start(self, wait_ready: float | None = 30.0) -> GmailConnectWatcher:
        """Subscribe; with `wait_ready`, return once the first snapshot (the catch-up) was handled."""
        self._stop.clear()
        self.disconnects.resume_pending()  # purges a crash left unfinished
        self._subscribe()
        self._supervisor = threading.Thread(target=self._supervise, name="watcher-supervisor", daemon=True)
        self._supervisor.start()
        if wait_ready is not None and not self._ready.wait(wait_ready):
            raise TimeoutError(f"the providerUsers listener delivered no snapshot within {wait_ready}s")
        return self

    def stop(self, wait: bool = True) -> None:
        """Unsubscribe, then let running launches finish (`wait`) or drop queued ones."""
        self._stop.set()
        self._close_watch()
        if self._supervisor is not None:
            self._supervisor.join(timeout=5)
            self._supervisor = None
        self.launcher.shutdown(wait=wait)
        self.disconnects.shutdown(wait=wait)
        logger.info("watcher stopped")

    def __enter__(self) -> GmailConnectWatcher:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def run_forever(self) -> None:
        """Block until interrupted (Ctrl-C), then stop cleanly."""
        self.start()
        try:
            while not self._stop.wait(1.0):
                pass
        except KeyboardInterrupt:
            logger.info("interrupted")
        finally:
            self.stop(wait=False)

    # ----------------------------------------------------------------------------- subscription

    def _query(self) -> firestore.Query:
        return self.client.collection("providerUsers").where(
            filter=FieldFilter("services.gmail.active", "==", True)
        )

    def _subscribe(self) -> None:
        with self._lock:
            self._first_snapshot_pending = True
            self._callback_failed.clear()
            self._watch = self._query().on_snapshot(self._on_snapshot)
            self.subscriptions += 1
        logger.info("listening for Gmail connects (subscription %d)", self.subscriptions)

    def _close_watch(self) -> None:
        with self._lock:
            watch, self._watch = self._watch, None
        if watch is not None:
            with contextlib.suppress(Exception):
                watch.unsubscribe()

    def _watch_is_dead(self) -> bool:
        watch = self._watch
        if watch is None:
            return True
        # The client closes a watch on non-recoverable stream errors (raising in a private thread,
        # so nobody is told): `_closed` is the only reliable sign; `is_active` covers a dead consumer.
        return bool(getattr(watch, "_closed", False)) or not watch.is_active

    def sweep_stale_pending(self) -> list[str]:
        """Fail the pending documents whose flow run never started (`ProgressWriter.fail_stale_pending`);
        the supervisor calls it every `pending_sweep_interval` seconds."""
        self._last_pending_sweep = time.monotonic()
        try:
            return self.progress.fail_stale_pending(self.pending_start_timeout.total_seconds())
        except Exception as exc:  # Firestore briefly unreachable: the next sweep tries again
            logger.warning("sweeping stale pending syncs failed: %s", exc)
            return []

    def _supervise(self) -> None:
        delay = self.resubscribe_initial_delay
        while not self._stop.wait(self.health_check_interval):
            if time.monotonic() - self._last_pending_sweep >= self.pending_sweep_interval:
                self.sweep_stale_pending()
            if not (self._callback_failed.is_set() or self._watch_is_dead()):
                delay = self.resubscribe_initial_delay
                continue
            logger.warning("providerUsers listener closed; re-subscribing in %.1fs", delay)
            self._close_watch()
            if self._stop.wait(delay):
                return
            try:
                self._subscribe()
            except Exception:
                logger.exception("re-subscribing failed")
                delay = min(delay * 2, self.resubscribe_max_delay)

    # ----------------------------------------------------------------------------- events

    def _on_snapshot(self, docs: list[Any], changes: list[Any], read_time: Any) -> None:
        try:
            with self._lock:
                catch_up = self._first_snapshot_pending
                self._first_snapshot_pending = False
                after_gap = catch_up and self._ever_subscribed
                self._ever_subscribed = True
                for change in changes:
                    self._on_change(change, catch_up=catch_up, after_gap=after_gap)
        except Exception:
            # Never let an exception escape into the client's stream thread (it would kill the
            # watch silently); flag it so the supervisor re-subscribes and re-reads everything.
            logger.exception("handling a providerUsers snapshot failed")
            self._callback_failed.set()
        finally:
            self._ready.set()

    def _on_change(self, change: Any, *, catch_up: bool, after_gap: bool) -> None:
        provider_user_id: str = change.document.id
        kind = change.type.name  # ADDED | MODIFIED | REMOVED
        if kind == "REMOVED":
            self._handled.pop(provider_user_id, None)
            user, key, blocked = None, None, None
        else:
            user = ProviderUser.from_firestore(change.document.to_dict())
            blocked = automatic_sync_blocked(user)
            # A new connectedAt of a user waiting to reconnect is a reconnect, even while active stays true.
            key = _connect_key(user, change.document) if kind == "ADDED" or blocked else None
        decision = decide_connect(
            kind,
            connect_key=key,
            handled_key=self._handled.get(provider_user_id),
            catch_up=catch_up,
            after_gap=after_gap,
            state=lambda: self.sync_state.get(provider_user_id),
            pending=lambda: self._pending_progress(provider_user_id),
            now=datetime.now(UTC),
            stale_pending_after=self.stale_pending_after,
            blocked=blocked,
        )
        if decision.action == "start":
            assert user is not None
            self._start_sync(provider_user_id, user, why=decision.reason)
        else:
            self._decide(
                provider_user_id, "skipped" if decision.action == "skip" else decision.action, decision.reason
            )
            if decision.action == "disconnected":
                self.disconnects.handle(provider_user_id)
        if key is not None:
            # Only now: if anything above raised, the re-subscription re-delivers this connect and retries.
            self._handled[provider_user_id] = key

    def _pending_progress(self, provider_user_id: str) -> list[SyncProgress]:
        query = (
            self.client.collection(SyncProgress.COLLECTION)
            .where(filter=FieldFilter("providerUserId", "==", provider_user_id))
            .where(filter=FieldFilter("status", "==", SyncStatus.PENDING.value))
        )
        return [SyncProgress.from_firestore(snapshot.to_dict()) for snapshot in query.stream()]

    def _start_sync(self, provider_user_id: str, user: ProviderUser, *, why: str) -> None:
        sync_id = new_sync_id(provider_user_id, SyncTrigger.CONNECT)
        if user.gmail_needs_reauth:  # a connect is a reconnect: the new grant gets its chance
            ProviderUserRepository(self.client).set_needs_reauth(provider_user_id, False)
        # Order matters: the pending doc first, so the web app shows the sync before Prefect knows it.
        self.progress.create_pending(
            sync_id=sync_id,
            app_user_id=user.app_user_id,
            family_id=user.family_id,
            provider_user_id=provider_user_id,
            trigger=SyncTrigger.CONNECT,
        )
        self.launcher.launch(SyncRequest(provider_user_id=provider_user_id, sync_id=sync_id))
        self._decide(provider_user_id, "started", why, sync_id=sync_id)

    def _decide(self, provider_user_id: str, action: str, reason: str, sync_id: str | None = None) -> None:
        decision = WatcherDecision(
            provider_user_id=provider_user_id,
            action=action,
            reason=reason,
            sync_id=sync_id,
            at=datetime.now(UTC),
        )
        self.decisions.append(decision)
        if action == "started":
            logger.info("started sync %s for %s: %s", sync_id, provider_user_id, reason)
        else:
            logger.info("skipped %s: %s", provider_user_id, reason)
        if self.on_decision is not None:
            with contextlib.suppress(Exception):
                self.on_decision(decision)

    def started(self) -> list[WatcherDecision]:
        with self._lock:
            return [d for d in self.decisions if d.action == "started"]

    def wait_for_decisions(self, count: int, timeout: float = 10.0) -> list[WatcherDecision]:
        """Block until at least `count` decisions were made (tests, the demo)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.decisions) >= count:
                    return list(self.decisions)
            time.sleep(0.05)
        with self._lock:
            return list(self.decisions)


def _connect_key(user: ProviderUser, snapshot: Any) -> str:
    """Identity of one connect: its `connectedAt`, else the document's creation/update time."""
    connected_at = user.services.gmail.connected_at
    if connected_at is not None:
        return connected_at.isoformat()
    stamp = getattr(snapshot, "update_time", None) or getattr(snapshot, "create_time", None)
    return f"doc@{stamp}"
