"""The Pub/Sub emulator manager: google-cloud-pubsub reaches it through PUBSUB_EMULATOR_HOST."""

from __future__ import annotations

import json
import os

from google.cloud import pubsub_v1

from emailsync.local.pubsub_emulator import PubSubEmulator
from tests.fixtures.pubsub import PubSubTopic


def test_a_published_message_is_pulled_from_the_subscription(
    pubsub_emulator: PubSubEmulator, pubsub_topic: PubSubTopic
) -> None:
    assert os.environ["PUBSUB_EMULATOR_HOST"] == pubsub_emulator.host
    publisher = pubsub_v1.PublisherClient()
    publisher.publish(pubsub_topic.topic, json.dumps({"hello": "world"}).encode()).result(timeout=30)

    assert pubsub_topic.pull(timeout=30, until=1) == [{"hello": "world"}]


def test_restart_keeps_the_port_and_starts_empty(pubsub_emulator: PubSubEmulator) -> None:
    publisher = pubsub_v1.PublisherClient()
    topic = publisher.topic_path("omnibutler-test", "restart-check")
    publisher.create_topic(request={"name": topic})
    port = pubsub_emulator.port

    pubsub_emulator.restart()

    assert pubsub_emulator.port == port
    assert pubsub_emulator.running
    # In-memory emulator: the topic is gone, and creating it again works on the same client.
    publisher.create_topic(request={"name": topic})
    publisher.publish(topic, b"{}").result(timeout=30)
