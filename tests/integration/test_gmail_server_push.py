"""Gmail push on the local server: users.watch / users.stop through google-api-python-client, and the
notifications in the real Pub/Sub emulator, pulled from a subscription as a listener would."""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import subprocess
import sys
import time
from collections.abc import Callable

import pytest
import requests
from google.cloud import pubsub_v1
from googleapiclient.discovery import Resource
from googleapiclient.errors import HttpError

from emailsync.local.gmail_server.server import GmailApiServer
from emailsync.local.mailbox import Mailbox
from emailsync.local.processes import free_port, stop_process_group
from tests.fixtures.gmail import SAMPLE_MBOX, gmail_api
from tests.fixtures.pubsub import PubSubTopic

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("gmail_server_keeps_contract")]

TOKEN = "push-test-token"


def new_message(number: int) -> bytes:
    return (
        f"From: Alice <alice@example.org>\r\nTo: me@example.com\r\nSubject: Update {number}\r\n"
        f"Message-ID: <update-{number}@example.org>\r\nDate: Wed, 25 Nov 2026 10:00:00 +0000\r\n\r\n"
        f"News number {number}.\r\n"
    ).encode()


def gmail(server: GmailApiServer, token: str = TOKEN) -> Resource:
    return gmail_api(server, token)


def watch(server: GmailApiServer, topic: str, token: str = TOKEN) -> dict[str, str]:
    body = {"topicName": topic, "labelIds": ["INBOX"], "labelFilterBehavior": "include"}
    return gmail(server, token).users().watch(userId="me", body=body).execute()


def test_a_new_message_under_a_live_watch_is_published_with_address_and_history_id(
    gmail_server: GmailApiServer, pubsub_topic: PubSubTopic
) -> None:
    before = time.time()
    answer = watch(gmail_server, pubsub_topic.topic)

    gmail_server.add_message(new_message(1), token=TOKEN)

    assert answer["historyId"] == str(gmail_server.mailbox_for(TOKEN).history_id - 1)
    seven_days_ms = 7 * 24 * 3600 * 1000
    assert abs(int(answer["expiration"]) - (before * 1000 + seven_days_ms)) < 60_000
    notifications = pubsub_topic.pull(timeout=30, until=1)
    mailbox = gmail_server.mailbox_for(TOKEN)
    assert notifications == [{"emailAddress": mailbox.email_address, "historyId": mailbox.history_id}]


def test_a_burst_of_changes_is_coalesced_to_one_publish_a_second_ending_on_the_newest_history_id(
    gmail_server: GmailApiServer, pubsub_topic: PubSubTopic
) -> None:
    watch(gmail_server, pubsub_topic.topic)

    for number in range(20):
        gmail_server.add_message(new_message(number), token=TOKEN)
    newest = gmail_server.mailbox_for(TOKEN).history_id

    messages = pubsub_topic.pull_messages(timeout=4)
    history_ids = [json.loads(m.data)["historyId"] for m in messages]
    assert 1 <= len(messages) <= 3  # one at once, one trailing (a third if the burst spanned a second)
    assert history_ids[-1] == newest and history_ids == sorted(history_ids)
    publish_times = [m.publish_time.timestamp() for m in messages]
    gaps = [later - earlier for earlier, later in itertools.pairwise(publish_times)]
    assert all(gap >= 0.9 for gap in gaps), gaps


def test_each_gmail_user_is_notified_on_their_own_topic_with_their_own_address(
    gmail_server: GmailApiServer, pubsub_topic: PubSubTopic
) -> None:
    gmail_server.add_mailbox("bob-token", Mailbox.from_raw_messages([], email_address="bob@example.com"))
    watch(gmail_server, pubsub_topic.topic, token="bob-token")

    gmail_server.add_message(new_message(1), token=TOKEN)  # not watched: nothing published
    gmail_server.add_message(new_message(2), token="bob-token")

    assert pubsub_topic.pull(timeout=3) == [
        {"emailAddress": "bob@example.com", "historyId": gmail_server.mailbox_for("bob-token").history_id}
    ]


def test_nothing_is_published_after_the_watch_expired(
    make_gmail_server: Callable[..., GmailApiServer], pubsub_topic: PubSubTopic
) -> None:
    server = make_gmail_server(watch_ttl_seconds=1)
    before = time.time()
    answer = watch(server, pubsub_topic.topic)
    assert abs(int(answer["expiration"]) - (before * 1000 + 1000)) < 5_000

    time.sleep(1.2)
    server.add_message(new_message(1), token=TOKEN)

    assert pubsub_topic.pull(timeout=2.5) == []


def test_nothing_is_published_after_users_stop(
    gmail_server: GmailApiServer, pubsub_topic: PubSubTopic
) -> None:
    watch(gmail_server, pubsub_topic.topic)

    assert gmail(gmail_server).users().stop(userId="me").execute() in ("", {}, None)
    gmail_server.add_message(new_message(1), token=TOKEN)

    assert pubsub_topic.pull(timeout=2.5) == []


def test_watch_and_stop_cost_100_and_50_quota_units(
    gmail_server: GmailApiServer, pubsub_topic: PubSubTopic
) -> None:
    watch(gmail_server, pubsub_topic.topic)
    gmail(gmail_server).users().stop(userId="me").execute()

    stats = gmail_server.stats
    assert stats.quota_units == 150
    assert stats.requests_by_method == {"users.watch": 1, "users.stop": 1}


def test_watch_rejects_a_missing_malformed_or_unknown_topic(
    gmail_server: GmailApiServer, pubsub_topic: PubSubTopic
) -> None:
    gmail_server.configure(quota_units_per_second=0)  # three watches cost more than one second's quota
    project = pubsub_topic.topic.split("/")[1]
    cases = {
        "": 400,
        "gmail-push": 400,  # a bare name, not projects/P/topics/T
        f"projects/{project}/topics/no-such-topic": 404,
    }
    for topic, status in cases.items():
        with pytest.raises(HttpError) as refused:
            watch(gmail_server, topic)
        assert refused.value.resp.status == status, topic


def test_a_failed_publish_is_logged_and_the_mailbox_change_still_happens(
    gmail_server: GmailApiServer, pubsub_topic: PubSubTopic, caplog: pytest.LogCaptureFixture
) -> None:
    watch(gmail_server, pubsub_topic.topic)
    pubsub_v1.PublisherClient().delete_topic(request={"topic": pubsub_topic.topic})
    total = len(gmail_server.mailbox_for(TOKEN))

    with caplog.at_level(logging.WARNING, logger="emailsync.local.gmail_server.push"):
        gmail_server.add_message(new_message(1), token=TOKEN)
        deadline = time.monotonic() + 30
        while "publishing" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.1)

    assert len(gmail_server.mailbox_for(TOKEN)) == total + 1
    assert f"publishing to {pubsub_topic.topic} failed" in caplog.text


def test_cli_gmail_server_takes_the_token_and_watch_ttls(pubsub_topic: PubSubTopic) -> None:
    port = free_port()
    command = [sys.executable, "-m", "emailsync.cli", "gmail-server", "--mbox", str(SAMPLE_MBOX)]
    command += ["--port", str(port), "--access-token-ttl-seconds", "7", "--watch-ttl-seconds", "60"]
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert process.poll() is None, "emailsync gmail-server exited"
            with contextlib.suppress(requests.RequestException):
                if requests.get(url + "_stats", timeout=1).status_code == 200:
                    break
            time.sleep(0.2)
        form = {"grant_type": "refresh_token", "refresh_token": "cli-refresh", "client_id": "cli-client"}
        token = requests.post(url + "token", data=form, timeout=10).json()
        before = time.time()
        watched = requests.post(
            url + "gmail/v1/users/me/watch",
            json={"topicName": pubsub_topic.topic},
            headers={"Authorization": f"Bearer {token['access_token']}"},
            timeout=30,
        )
    finally:
        stop_process_group(process)

    assert token["expires_in"] == 7
    assert watched.status_code == 200
    assert abs(int(watched.json()["expiration"]) - (before + 60) * 1000) < 10_000


def test_a_watch_through_an_issued_access_token_covers_its_grant_users_mailbox(
    gmail_server: GmailApiServer, pubsub_topic: PubSubTopic
) -> None:
    gmail_server.add_mailbox("carol", Mailbox.from_raw_messages([], email_address="carol@example.com"))
    grant = gmail_server.issue_grant("carol")
    first = watch(gmail_server, pubsub_topic.topic, token=grant.access_token)

    renewed = watch(gmail_server, pubsub_topic.topic, token=grant.access_token)  # renewal: same watch
    gmail_server.add_message(new_message(1), token="carol")

    assert int(renewed["expiration"]) >= int(first["expiration"])
    carol = gmail_server.mailbox_for("carol")
    assert pubsub_topic.pull(timeout=30, until=1) == [
        {"emailAddress": "carol@example.com", "historyId": carol.history_id}
    ]


def test_a_delivery_to_the_served_mailbox_notifies_every_watching_user(
    gmail_server: GmailApiServer, pubsub_topic: PubSubTopic
) -> None:
    for token in ("dave-token", "erin-token"):
        watch(gmail_server, pubsub_topic.topic, token=token)

    gmail_server.add_message(new_message(1))  # no token: the mbox, and every user's copy of it

    expected = [
        {"emailAddress": mailbox.email_address, "historyId": mailbox.history_id}
        for mailbox in (gmail_server.mailbox_for("dave-token"), gmail_server.mailbox_for("erin-token"))
    ]
    received = pubsub_topic.pull(timeout=30, until=2)
    assert sorted(received, key=str) == sorted(expected, key=str)
    assert expected[0]["emailAddress"] != expected[1]["emailAddress"]
