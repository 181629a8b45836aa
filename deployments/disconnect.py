"""What the watcher does when a user disconnects Gmail (`services.gmail.active` turns false).

A running sync needs nothing from here: it notices the disconnect itself at its next batch boundary
(`emailsync.lifecycle.ConnectionGuard`). Here, on a worker thread: the user's Gmail push watch is stopped
(`stop_push_watch`, the hook for Gmail push: users.stop needs the credentials, so it runs before a purge
deletes them), then with `EMAILSYNC_ON_DISCONNECT=purge` the user's emails, sync state and credentials
are purged (`emailsync.lifecycle.purge_provider_user`). The purge is marked first, on the listener
thread, so one the process does not finish is resumed when the watcher starts again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from google.cloud import firestore

from emailsync.config import get_settings
from emailsync.lifecycle import pending_purges, purge_provider_user, request_purge

logger = logging.getLogger("emailsync.watcher")

StopPushWatch = Callable[[str], None]


class DisconnectHandler:
    def __init__(
        self,
        client: firestore.Client,
        *,
        policy: str | None = None,
        stop_push_watch: StopPushWatch | None = None,
    ) -> None:
        self.client = client
        self.policy = policy or get_settings().on_disconnect
        # Gmail push (users.stop for the user's watch); None while no push watch is registered anywhere.
        self.stop_push_watch = stop_push_watch
        # One disconnect at a time: a purge is bounded batches of deletes, never urgent.
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="disconnect")
        self._stopping = threading.Event()

    def handle(self, provider_user_id: str) -> None:
        purge = self.policy == "purge"
        if purge:
            request_purge(self.client, provider_user_id)
            logger.info("purge of %s requested (EMAILSYNC_ON_DISCONNECT=purge)", provider_user_id)
        if purge or self.stop_push_watch is not None:
            self._pool.submit(self._disconnected, provider_user_id, purge)

    def _disconnected(self, provider_user_id: str, purge: bool) -> None:
        if self.stop_push_watch is not None:
            try:
                self.stop_push_watch(provider_user_id)
            except Exception:
                logger.exception("could not stop the push watch of %s", provider_user_id)
        if purge:
            self._purge(provider_user_id)

    def resume_pending(self) -> None:
        """Run again every purge that was requested but not finished (its process died)."""
        try:
            unfinished = pending_purges(self.client)
        except Exception:
            logger.exception("could not look for unfinished purges")
            return
        for provider_user_id in unfinished:
            logger.info("resuming the unfinished purge of %s", provider_user_id)
            self._pool.submit(self._purge, provider_user_id)

    def _purge(self, provider_user_id: str) -> None:
        try:
            purge_provider_user(self.client, provider_user_id, stopping=self._stopping.is_set)
        except Exception:  # its marker stays: the next watcher start (or `emailsync purge`) resumes it
            logger.exception("purge of %s failed", provider_user_id)

    def shutdown(self, wait: bool) -> None:
        """With `wait`, finish what was handed over; without, a running purge stops after its batch (its
        marker stays: the next start resumes it)."""
        if not wait:
            self._stopping.set()
        self._pool.shutdown(wait=wait, cancel_futures=not wait)
