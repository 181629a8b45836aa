"""Gmail push end to end: the real Firestore and Pub/Sub emulators, the local Gmail server's
users.watch publishing to Pub/Sub, the streaming-pull listener and (where a sync runs) the real flow."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import cache
from typing import Any

import pytest
from google.cloud import firestore, pubsub_v1

from deployments.push import AddressBook, PushSyncRunner
from emailsync.config import Settings, get_settings
from emailsync.firestore.emails import EmailRepository
from emailsync.firestore.sync_state import SyncStateRepository
from emailsync.local.gmail_server.server import GmailApiServer
from emailsync.local.mailbox import Mailbox, read_mbox
from emailsync.local.pubsub_emulator import PubSubEmulator
from emailsync.local.seed import seed_account
from emailsync.push.coalesce import RunOutcome, SyncCoalescer
from emailsync.push.listener import PushListener
from emailsync.push.pubsub import PushTarget
from emailsync.push.watches import GmailWatches, WatchRepository
from flows.email_sync import email_sync
from tests.fixtures.firestore import TEST_PROJECT
from tests.fixtures.gmail import SAMPLE_MBOX

pytestmark = [pytest.mark.integration]

USER = "pu-push"
TOKEN = "token-pu-push"
ADDRESS = "push.user@example.com"


@cache
def _raws() -> tuple[bytes, ...]:
    return tuple(read_mbox(SAMPLE_MBOX))


def _new_message(n: int) -> bytes:
    return (
        f"From: sender{n}@example.org\r\nTo: {ADDRESS}\r\nSubject: push test {n} {uuid.uuid4().hex[:6]}\r\n"
        f"Date: {datetime.now(UTC).strftime('%a, %d %b %Y %H:%M:%S +0000')}\r\n"
        f"Message-ID: <push-{n}-{uuid.uuid4().hex}@example.org>\r\n\r\nA new message number {n}.\r\n"
    ).encode()


@pytest.fixture
def target(pubsub_emulator: PubSubEmulator) -> PushTarget:
    suffix = uuid.uuid4().hex[:10]
    return PushTarget(
        topic=f"projects/{TEST_PROJECT}/topics/gmail-{suffix}",
        subscription=f"projects/{TEST_PROJECT}/subscriptions/gmail-{suffix}",
    )


@pytest.fixture
def push_user(
    firestore_client: firestore.Client, gmail_server: GmailApiServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[GmailApiServer]:
    """One connected user with a 3-message mailbox whose profile says ADDRESS; watch TTL restored after."""
    gmail_server.configure(quota_units_per_second=0)
    monkeypatch.setenv("GMAIL_API_ENDPOINT", gmail_server.url)
    get_settings.cache_clear()
    gmail_server.add_mailbox(TOKEN, Mailbox.from_raw_messages(_raws()[:3], email_address=ADDRESS))
    seed_account(firestore_client, provider_user_id=USER, email=ADDRESS, token=TOKEN, gmail_active=True)
    ttl = gmail_server.push.watch_ttl_seconds
    try:
        yield gmail_server
    finally:
        gmail_server.push.watch_ttl_seconds = ttl
        get_settings.cache_clear()


def _pull(subscriber: pubsub_v1.SubscriberClient, subscription: str, timeout: float) -> list[dict]:
    deadline, received = time.monotonic() + timeout, []
    while time.monotonic() < deadline and not received:
        response = subscriber.pull(request={"subscription": subscription, "max_messages": 100}, timeout=5)
        for message in response.received_messages:
            received.append(json.loads(message.message.data))
        if response.received_messages:
            subscriber.acknowledge(
                request={
                    "subscription": subscription,
                    "ack_ids": [m.ack_id for m in response.received_messages],
                }
            )
    return received


class RecordingRunner:
    """A runner that records which users it was asked to sync (listener tests: no sync needed)."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.event = threading.Event()

    def __call__(self, provider_user_id: str) -> RunOutcome:
        self.calls.append(provider_user_id)
        self.event.set()
        return RunOutcome.DONE


def _publish(topic: str, address: str, count: int = 1, history_id: int = 1) -> None:
    publisher = pubsub_v1.PublisherClient()
    futures = [
        publisher.publish(topic, json.dumps({"emailAddress": address, "historyId": history_id + n}).encode())
        for n in range(count)
    ]
    for future in futures:
        future.result(timeout=30)


def _wait(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


# ------------------------------------------------------------------------------------------ watches


def test_a_watch_is_renewed_before_it_expires_and_a_far_one_is_left_alone(
    firestore_client: firestore.Client, push_user: GmailApiServer, target: PushTarget
):
    push_user.push.watch_ttl_seconds = 600
    relaxed = GmailWatches(
        target.topic, firestore_client, settings=Settings(gmail_watch_renew_before_seconds=60)
    )
    first = relaxed.register(USER)
    assert WatchRepository(firestore_client).provider_user_for(ADDRESS.upper()) == USER

    assert relaxed.renew().current == [USER]  # 10 minutes left, margin 1 minute: nothing to do

    eager = GmailWatches(
        target.topic, firestore_client, settings=Settings(gmail_watch_renew_before_seconds=3600)
    )
    result = eager.renew()
    assert result.renewed == [USER] and not result.recreated and not result.failed
    renewed = WatchRepository(firestore_client).get(USER)
    assert renewed is not None and renewed.expiration > first.expiration
    assert renewed.expiration > datetime.now(UTC)  # renewed while the old one was still live


def test_a_lapsed_watch_is_recreated_and_notifications_flow_again(
    firestore_client: firestore.Client, push_user: GmailApiServer, target: PushTarget
):
    subscriber = pubsub_v1.SubscriberClient()
    pubsub_v1.PublisherClient().create_topic(request={"name": target.topic})
    subscriber.create_subscription(request={"name": target.subscription, "topic": target.topic})
    push_user.push.watch_ttl_seconds = 1
    watches = GmailWatches(target.topic, firestore_client)
    watches.register(USER)
    time.sleep(1.5)
    push_user.add_message(_new_message(1), token=TOKEN)
    assert _pull(subscriber, target.subscription, timeout=2.5) == []  # lapsed: Gmail says nothing

    push_user.push.watch_ttl_seconds = 600
    result = watches.renew()

    assert result.recreated == [USER]
    push_user.add_message(_new_message(2), token=TOKEN)
    notes = _pull(subscriber, target.subscription, timeout=20)
    assert notes and notes[-1]["emailAddress"] == ADDRESS
    subscriber.close()


def test_disconnect_stops_the_watch(
    firestore_client: firestore.Client, push_user: GmailApiServer, target: PushTarget
):
    watches = GmailWatches(target.topic, firestore_client)
    watches.register(USER)
    firestore_client.collection("providerUsers").document(USER).update({"services.gmail.active": False})

    assert watches.renew().stopped == [USER]
    assert WatchRepository(firestore_client).get(USER) is None


# ------------------------------------------------------------------------------------------ listener


def test_unknown_addresses_are_acknowledged_and_logged(
    firestore_client: firestore.Client, push_user: GmailApiServer, target: PushTarget
):
    runner = RecordingRunner()
    coalescer = SyncCoalescer(runner)
    listener = PushListener(target, AddressBook(WatchRepository(firestore_client)), coalescer).start()
    try:
        assert listener.connected()
        _publish(target.topic, "stranger@example.net")
        assert _wait(lambda: listener.unknown == 1, 20)
    finally:
        listener.stop()
        coalescer.shutdown()
    assert runner.calls == []
    subscriber = pubsub_v1.SubscriberClient()
    assert _pull(subscriber, target.subscription, timeout=2) == []  # acknowledged: never delivered again
    subscriber.close()


def test_the_listener_survives_a_restart_of_the_pubsub_emulator(
    firestore_client: firestore.Client,
    push_user: GmailApiServer,
    target: PushTarget,
    pubsub_emulator: PubSubEmulator,
):
    GmailWatches(target.topic, firestore_client).register(USER)
    runner = RecordingRunner()
    coalescer = SyncCoalescer(runner)
    listener = PushListener(
        target, AddressBook(WatchRepository(firestore_client)), coalescer, resubscribe_max_delay=2.0
    ).start()
    try:
        assert listener.connected()
        pubsub_emulator.restart()  # in-memory: topic and subscription are gone afterwards
        # The listener notices, creates both again and re-subscribes.
        assert _wait(lambda: listener.subscriptions >= 2 and listener.connected(0.1), 60), (
            listener.subscriptions
        )
        GmailWatches(target.topic, firestore_client).register(USER)  # the renewal pass would, too
        push_user.add_message(_new_message(3), token=TOKEN)
        assert runner.event.wait(30), "no notification reached the listener after the restart"
        assert runner.calls[0] == USER
    finally:
        listener.stop()
        coalescer.shutdown()


# ------------------------------------------------------------------------------------------ syncs


@pytest.fixture
def backfilled_user(
    push_user: GmailApiServer, prefect_server: Any, firestore_client: firestore.Client
) -> GmailApiServer:
    summary = email_sync(USER, trigger="connect")
    assert SyncStateRepository(firestore_client).get(USER).backfill_completed, summary
    return push_user


def test_a_burst_of_100_notifications_runs_at_most_two_syncs_and_loses_no_change(
    firestore_client: firestore.Client, backfilled_user: GmailApiServer, target: PushTarget
):
    GmailWatches(target.topic, firestore_client).register(USER)
    runner = PushSyncRunner(firestore_client)  # in-process email_sync, trigger "push"
    coalescer = SyncCoalescer(runner)
    listener = PushListener(target, AddressBook(WatchRepository(firestore_client)), coalescer).start()
    try:
        assert listener.connected()
        first = backfilled_user.add_message(_new_message(10), token=TOKEN)
        _publish(target.topic, ADDRESS, count=50)
        last = backfilled_user.add_message(_new_message(11), token=TOKEN)
        _publish(target.topic, ADDRESS, count=50, history_id=100)
        assert _wait(lambda: coalescer.notifications(USER) >= 100, 60), coalescer.notifications(USER)
        assert coalescer.wait_idle(120)
    finally:
        listener.stop()
        coalescer.shutdown()
    assert 1 <= coalescer.runs(USER) <= 2
    stored = set(EmailRepository(firestore_client).list_ids(USER))
    assert {first, last} <= stored
    record = EmailRepository(firestore_client).get(USER, last)
    assert record is not None and record.embedding is not None and record.summary


def test_a_notification_during_a_running_sync_leads_to_exactly_one_follow_up(
    firestore_client: firestore.Client, backfilled_user: GmailApiServer
):
    real = PushSyncRunner(firestore_client)
    release, running = threading.Event(), threading.Event()
    calls: list[str] = []

    def held_first_run(provider_user_id: str) -> RunOutcome:
        calls.append(provider_user_id)
        outcome = real(provider_user_id)
        if len(calls) == 1:  # the first sync has read its history; hold it "running" a moment longer
            running.set()
            release.wait(30)
        return outcome

    coalescer = SyncCoalescer(held_first_run)
    try:
        backfilled_user.add_message(_new_message(20), token=TOKEN)
        coalescer.notify(USER)
        assert running.wait(120)
        late = backfilled_user.add_message(_new_message(21), token=TOKEN)
        for _ in range(3):
            coalescer.notify(USER)
        release.set()
        assert coalescer.wait_idle(120)
    finally:
        coalescer.shutdown()
    assert calls == [USER, USER]
    assert late in set(EmailRepository(firestore_client).list_ids(USER))
