"""The Gmail push listener: streaming pull on the push subscription; each notification names a
mailbox (`emailAddress`) whose provider user gets an incremental sync (through a `SyncCoalescer`).

A message is acknowledged once its sync is scheduled (running or queued); a notification for an
address no provider user has is acknowledged and logged; one that could not be scheduled is nacked,
so Pub/Sub delivers it again. When the stream ends (the emulator or Pub/Sub restarted, the
subscription vanished), a supervisor creates the topic and subscription again when they are missing
and re-subscribes, with backoff.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from google.cloud import pubsub_v1
from google.cloud.pubsub_v1.subscriber.message import Message

from emailsync.push.coalesce import SyncCoalescer
from emailsync.push.pubsub import GmailNotification, PushTarget, ensure_subscription

logger = logging.getLogger("emailsync.push")

# Resolution of a notification's address to a provider user id (None: unknown address).
AddressResolver = Callable[[str], str | None]


class PushListener:
    """start() / stop(); `received`, `unknown` and `subscriptions` count what happened."""

    def __init__(
        self,
        target: PushTarget,
        resolve: AddressResolver,
        coalescer: SyncCoalescer,
        *,
        max_messages: int = 100,
        resubscribe_initial_delay: float = 0.5,
        resubscribe_max_delay: float = 30.0,
        health_check_interval: float = 0.5,
    ) -> None:
        self.target = target
        self.resolve = resolve
        self.coalescer = coalescer
        self.flow_control = pubsub_v1.types.FlowControl(max_messages=max_messages)
        self.resubscribe_initial_delay = resubscribe_initial_delay
        self.resubscribe_max_delay = resubscribe_max_delay
        self.health_check_interval = health_check_interval
        self.received = 0
        self.unknown = 0
        self.subscriptions = 0
        self._subscriber: pubsub_v1.SubscriberClient | None = None
        self._future: Any = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._supervisor: threading.Thread | None = None

    def start(self) -> PushListener:
        self._stop.clear()
        self._subscribe()
        self._supervisor = threading.Thread(target=self._supervise, name="push-supervisor", daemon=True)
        self._supervisor.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._close()
        if self._supervisor is not None:
            self._supervisor.join(timeout=10)
            self._supervisor = None
        logger.info("push listener stopped")

    def __enter__(self) -> PushListener:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ----------------------------------------------------------------------------- subscription

    def _subscribe(self) -> None:
        subscriber = pubsub_v1.SubscriberClient()
        try:
            ensure_subscription(self.target, subscriber)
            future = subscriber.subscribe(
                self.target.subscription, callback=self._on_message, flow_control=self.flow_control
            )
        except Exception:
            subscriber.close()
            raise
        with self._lock:
            self._subscriber, self._future = subscriber, future
            self.subscriptions += 1
        logger.info(
            "listening for Gmail push on %s (subscription %d)", self.target.subscription, self.subscriptions
        )

    def _close(self) -> None:
        with self._lock:
            future, subscriber = self._future, self._subscriber
            self._future = self._subscriber = None
        if future is not None:
            with contextlib.suppress(Exception):
                future.cancel()
                future.result(timeout=5)
        if subscriber is not None:
            with contextlib.suppress(Exception):
                subscriber.close()

    def _supervise(self) -> None:
        delay = self.resubscribe_initial_delay
        while not self._stop.wait(self.health_check_interval):
            future = self._future
            if future is not None and not future.done():
                delay = self.resubscribe_initial_delay
                continue
            if future is not None:
                with contextlib.suppress(Exception):
                    logger.warning(
                        "push stream ended (%s); re-subscribing in %.1fs", future.exception(), delay
                    )
            self._close()
            if self._stop.wait(delay):
                return
            try:
                self._subscribe()
            except Exception as exc:
                logger.warning("re-subscribing to %s failed: %s", self.target.subscription, exc)
                delay = min(delay * 2, self.resubscribe_max_delay)

    def connected(self, timeout: float = 10.0) -> bool:
        """Wait until a streaming pull is open (tests)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            future = self._future
            if future is not None and not future.done():
                return True
            time.sleep(0.05)
        return False

    # ----------------------------------------------------------------------------- messages

    def _on_message(self, message: Message) -> None:
        try:
            self.received += 1
            notification = GmailNotification.from_data(message.data)
            if notification is None:
                message.ack()  # not ours to retry: it would come back forever
                return
            provider_user_id = self.resolve(notification.email_address)
            if provider_user_id is None:
                self.unknown += 1
                logger.warning(
                    "Gmail notification for %s, which no provider user has: acknowledged and ignored",
                    notification.email_address,
                )
                message.ack()
                return
            if self.coalescer.notify(provider_user_id):
                message.ack()
            else:
                message.nack()  # shutting down: Pub/Sub delivers it again
        except Exception:
            logger.exception("handling a Gmail notification failed; it will be delivered again")
            message.nack()
