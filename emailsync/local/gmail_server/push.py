"""Gmail push for the local server: `users.watch` / `users.stop`, publishing to the Pub/Sub emulator.

While a user's watch is live, every change of their mailbox publishes a message whose data is
`{"emailAddress": ..., "historyId": <number>}` to the watch's topic, as Gmail does. Per user at most
one publish per `min_interval_seconds` (Gmail: about one a second): the first change of a quiet
mailbox is published at once, the changes that follow within the interval coalesce into one trailing
publish with the newest historyId. Nothing is published once the watch has expired or was stopped.

Publishing runs on one background thread, never on a request thread; a failed publish is logged and
dropped (Gmail's notifications are hints, the client catches up through history.list anyway).
The topic lives in the Pub/Sub emulator at `PUBSUB_EMULATOR_HOST` (this server never talks to Google);
`users.watch` checks that the topic exists there, as Gmail does with its test message.

`labelIds` / `labelFilterBehavior` are validated and kept, but every change notifies: a superset of
Gmail's notifications, which a client must tolerate anyway.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from emailsync.local.gmail_server.responses import ApiResponse, _json, error_response

if TYPE_CHECKING:
    from emailsync.local.mailbox import Mailbox

logger = logging.getLogger(__name__)

DEFAULT_WATCH_TTL_SECONDS = 7 * 24 * 3600.0  # Gmail's watches expire after 7 days
_TOPIC_NAME = re.compile(r"^projects/[^/]+/topics/[^/]+$")
_BEHAVIORS = ("include", "exclude")


@dataclass
class _Watch:
    topic: str
    email_address: str
    mailbox: Mailbox
    expires_at: float  # monotonic
    label_ids: tuple[str, ...]
    label_filter_behavior: str


class PushNotifier:
    """Live watches per Gmail user and the publisher thread that notifies their topics. Thread-safe."""

    def __init__(
        self,
        watch_ttl_seconds: float | None = None,
        pubsub_emulator_host: str | None = None,
        min_interval_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.watch_ttl_seconds = watch_ttl_seconds or DEFAULT_WATCH_TTL_SECONDS
        self._emulator_host = pubsub_emulator_host
        self.min_interval_seconds = min_interval_seconds
        self._clock = clock
        self._condition = threading.Condition()
        self._watches: dict[str, _Watch] = {}
        self._listening: dict[str, Mailbox] = {}  # user → the mailbox whose changes reach `changed`
        self._pending: dict[str, int] = {}  # user → newest historyId not yet published
        self._last_publish: dict[str, float] = {}
        self._thread: threading.Thread | None = None
        self._closed = False
        self._client_lock = threading.Lock()  # request threads (topic check) and the publisher thread
        self._publisher: Any = None  # google.cloud.pubsub_v1.PublisherClient, made on first use
        self._publisher_host: str | None = None
        self.published = 0  # messages handed to Pub/Sub (successful or not)

    @property
    def emulator_host(self) -> str | None:
        return self._emulator_host or os.environ.get("PUBSUB_EMULATOR_HOST") or None

    # ------------------------------------------------------------------------------------ API methods
    def watch(self, user: str, mailbox: Mailbox, body: bytes) -> ApiResponse:
        """users.watch: start (or renew) the user's watch; answers the current historyId and expiration."""
        try:
            request = json.loads(body or b"{}")
        except ValueError:
            return error_response(400, "Invalid JSON payload received.")
        if not isinstance(request, dict):
            return error_response(400, "Invalid JSON payload received.")
        topic = request.get("topicName")
        if not topic:
            return error_response(400, "topicName required")
        if not isinstance(topic, str) or not _TOPIC_NAME.match(topic):
            return error_response(400, "Invalid topicName does not match projects/SOME-PROJECT/topics/*")
        label_ids = request.get("labelIds") or []
        behavior = str(request.get("labelFilterBehavior") or request.get("labelFilterAction") or "include")
        if not isinstance(label_ids, list) or behavior.lower() not in _BEHAVIORS:
            return error_response(400, "Invalid labelIds or labelFilterBehavior")
        problem = self._check_topic(topic)
        if problem is not None:
            return problem
        ttl = self.watch_ttl_seconds
        expiration_ms = int((time.time() + ttl) * 1000)
        with self._condition:
            self._watches[user] = _Watch(
                topic=topic,
                email_address=mailbox.email_address,
                mailbox=mailbox,
                expires_at=self._clock() + ttl,
                label_ids=tuple(str(label) for label in label_ids),
                label_filter_behavior=behavior.lower(),
            )
            if self._listening.get(user) is not mailbox:
                self._listening[user] = mailbox
                mailbox.add_change_listener(lambda history_id: self.changed(user, history_id, mailbox))
            self._ensure_thread_locked()
        payload = {"historyId": str(mailbox.history_id), "expiration": str(expiration_ms)}
        return ApiResponse(status=200, body=_json(payload))

    def stop(self, user: str, mailbox: Mailbox | None = None, body: bytes = b"") -> ApiResponse:
        """users.stop: no more notifications for this user (204, as Gmail)."""
        with self._condition:
            self._watches.pop(user, None)
            self._pending.pop(user, None)
        return ApiResponse(status=204, body=b"")

    def reset(self) -> None:
        """Every watch and pending notification dropped (the publisher thread keeps running)."""
        with self._condition:
            self._watches.clear()
            self._pending.clear()
            self._last_publish.clear()

    def close(self) -> None:
        with self._condition:
            self._closed = True
            self._condition.notify_all()
            thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=5)
        with self._condition:
            self._closed = False  # a later watch (server started again) starts a new publisher thread
        publisher, self._publisher = self._publisher, None
        if publisher is not None:
            try:
                publisher.stop()
            except Exception:  # closing a client of a stopped emulator; nothing left to deliver
                logger.debug("closing the Pub/Sub publisher failed", exc_info=True)

    # --------------------------------------------------------------------------------- change hook
    def changed(self, user: str, history_id: int, mailbox: Mailbox) -> None:
        """A mailbox listener: `mailbox` (the one `user`'s watch covers) advanced to `history_id`."""
        with self._condition:
            watch = self._watches.get(user)
            if watch is None or watch.mailbox is not mailbox or watch.expires_at <= self._clock():
                return
            self._pending[user] = max(history_id, self._pending.get(user, 0))
            self._condition.notify_all()

    # ------------------------------------------------------------------------------ publisher thread
    def _ensure_thread_locked(self) -> None:
        if self._thread is None and not self._closed:
            self._thread = threading.Thread(target=self._run, name="gmail-push-publisher", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            with self._condition:
                if self._closed:
                    return
                due, wait = self._take_due_locked()
                if not due:
                    self._condition.wait(timeout=wait)
                    continue
            for topic, data in due:
                self._publish(topic, data)

    def _take_due_locked(self) -> tuple[list[tuple[str, bytes]], float | None]:
        """Notifications to publish now, and how long until the next one is due (None: none pending)."""
        now = self._clock()
        due: list[tuple[str, bytes]] = []
        wait: float | None = None
        for user, history_id in list(self._pending.items()):
            watch = self._watches.get(user)
            if watch is None or watch.expires_at <= now:
                del self._pending[user]
                continue
            ready_at = self._last_publish.get(user, float("-inf")) + self.min_interval_seconds
            if ready_at > now:
                wait = ready_at - now if wait is None else min(wait, ready_at - now)
                continue
            del self._pending[user]
            self._last_publish[user] = now
            data = json.dumps({"emailAddress": watch.email_address, "historyId": history_id})
            due.append((watch.topic, data.encode()))
        return due, wait

    def _publish(self, topic: str, data: bytes) -> None:
        self.published += 1
        try:
            future = self._client().publish(topic, data)
        except Exception as exc:
            logger.warning("Gmail push: publishing to %s failed: %s", topic, type(exc).__name__)
            return

        def done(result: Any) -> None:
            exc = result.exception()
            if exc is not None:
                logger.warning("Gmail push: publishing to %s failed: %s", topic, type(exc).__name__)

        future.add_done_callback(done)

    def _client(self) -> Any:
        # imported on first watch: servers that never push do without gRPC
        from google.cloud import pubsub_v1

        host = self.emulator_host
        if host is None:
            raise RuntimeError("PUBSUB_EMULATOR_HOST is not set")
        with self._client_lock:
            if self._publisher is None or self._publisher_host != host:
                # google-cloud-pubsub reads the emulator host from the environment as the client is made
                previous = os.environ.get("PUBSUB_EMULATOR_HOST")
                os.environ["PUBSUB_EMULATOR_HOST"] = host
                try:
                    self._publisher = pubsub_v1.PublisherClient()
                finally:
                    if previous is None:
                        os.environ.pop("PUBSUB_EMULATOR_HOST", None)
                    else:
                        os.environ["PUBSUB_EMULATOR_HOST"] = previous
                self._publisher_host = host
            return self._publisher

    def _check_topic(self, topic: str) -> ApiResponse | None:
        """Gmail sends a test message to the topic on watch; here: the topic must exist in the emulator."""
        if self.emulator_host is None:
            return error_response(
                400,
                "Push is unavailable: no Pub/Sub emulator for this local server (PUBSUB_EMULATOR_HOST)",
            )
        from google.api_core import exceptions as api_exceptions

        try:
            self._client().get_topic(request={"topic": topic}, timeout=10, retry=None)
        except api_exceptions.NotFound:
            return error_response(404, f"Resource not found (resource={topic.rsplit('/', 1)[-1]}).")
        except Exception as exc:
            return error_response(
                503, f"Error sending test message to Cloud PubSub {topic} : {type(exc).__name__}"
            )
        return None
