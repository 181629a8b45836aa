"""The Pub/Sub side of Gmail push: topic and subscription names, creating them when missing, and
the notification Gmail publishes (`{"emailAddress", "historyId"}`).

google-cloud-pubsub talks to the emulator when `PUBSUB_EMULATOR_HOST` is set, else to Google.
"""

from __future__ import annotations

import json
import logging
import re

from google.api_core import exceptions as gexc
from google.cloud import pubsub_v1
from pydantic import BaseModel, Field

from emailsync.config import Settings

logger = logging.getLogger("emailsync.push")

TOPIC_PATTERN = re.compile(r"^projects/(?P<project>[^/]+)/topics/(?P<name>[^/]+)$")
SUBSCRIPTION_PATTERN = re.compile(r"^projects/(?P<project>[^/]+)/subscriptions/(?P<name>[^/]+)$")
DEFAULT_SUBSCRIPTION_NAME = "emailsync-gmail-push"
# Gmail redelivers nothing itself; an unacknowledged notification comes back after this many seconds.
ACK_DEADLINE_SECONDS = 60


class PushConfigError(ValueError):
    """A push topic or subscription name that is not `projects/P/topics/T` / `projects/P/subscriptions/S`."""


class PushTarget(BaseModel):
    topic: str
    subscription: str


def push_target(settings: Settings) -> PushTarget | None:
    """The configured topic and subscription (None: push is off)."""
    topic = settings.gmail_push_topic
    if not topic:
        return None
    match = TOPIC_PATTERN.match(topic)
    if match is None:
        raise PushConfigError(f"EMAILSYNC_GMAIL_PUSH_TOPIC must be projects/P/topics/T, not {topic!r}")
    subscription = settings.gmail_push_subscription or (
        f"projects/{match['project']}/subscriptions/{DEFAULT_SUBSCRIPTION_NAME}"
    )
    if SUBSCRIPTION_PATTERN.match(subscription) is None:
        raise PushConfigError(
            f"EMAILSYNC_GMAIL_PUSH_SUBSCRIPTION must be projects/P/subscriptions/S, not {subscription!r}"
        )
    return PushTarget(topic=topic, subscription=subscription)


def ensure_topic(topic: str, publisher: pubsub_v1.PublisherClient | None = None) -> None:
    """Create the topic unless it exists."""
    publisher = publisher or pubsub_v1.PublisherClient()
    try:
        publisher.create_topic(request={"name": topic})
        logger.info("created Pub/Sub topic %s", topic)
    except gexc.AlreadyExists:
        pass


def ensure_subscription(target: PushTarget, subscriber: pubsub_v1.SubscriberClient | None = None) -> None:
    """Create the topic and the (pull) subscription unless they exist."""
    ensure_topic(target.topic)
    owned = subscriber is None
    subscriber = subscriber or pubsub_v1.SubscriberClient()
    try:
        subscriber.create_subscription(
            request={
                "name": target.subscription,
                "topic": target.topic,
                "ack_deadline_seconds": ACK_DEADLINE_SECONDS,
            }
        )
        logger.info("created Pub/Sub subscription %s on %s", target.subscription, target.topic)
    except gexc.AlreadyExists:
        pass
    finally:
        if owned:
            subscriber.close()


class GmailNotification(BaseModel):
    """What Gmail publishes for a mailbox change."""

    email_address: str = Field(alias="emailAddress")
    history_id: str | None = Field(default=None, alias="historyId")

    @classmethod
    def from_data(cls, data: bytes) -> GmailNotification | None:
        """The notification in a Pub/Sub message's data; None when it is not one (logged)."""
        try:
            payload = json.loads(data)
            if isinstance(payload.get("historyId"), int):
                payload["historyId"] = str(payload["historyId"])
            return cls.model_validate(payload)
        except Exception:
            logger.warning("ignoring a Pub/Sub message that is not a Gmail notification: %.200r", data)
            return None
