"""The local Gmail server's history, per-token users and change listeners, through the real
google-api-python-client. Every response is validated against Gmail's discovery document."""

from __future__ import annotations

import base64
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import requests
from googleapiclient.discovery import Resource
from googleapiclient.errors import HttpError
from typer.testing import CliRunner

from emailsync.cli import app
from emailsync.cli.console import EXIT_BAD_INPUT
from emailsync.local.gmail_server.server import GmailApiServer
from emailsync.local.mailbox import Mailbox
from emailsync.local.processes import free_port, stop_process_group
from tests.fixtures.gmail import gmail_api
from tests.integration.test_gmail_server import NEW_MESSAGE, TOKEN, gmail_service

pytestmark = pytest.mark.integration


def current_history_id(service: Resource) -> str:
    return service.users().getProfile(userId="me").execute()["historyId"]


def history(service: Resource, start: str, **kwargs: Any) -> list[dict[str, Any]]:
    """Every history record after `start`, over all pages."""
    records: list[dict[str, Any]] = []
    page_token: str | None = None
    while True:
        page = (
            service.users()
            .history()
            .list(userId="me", startHistoryId=start, pageToken=page_token, **kwargs)
            .execute()
        )
        records.extend(page.get("history", []))
        page_token = page.get("nextPageToken")
        if not page_token:
            return records


def test_history_has_a_record_of_each_type_in_googles_shape(checked_gmail_server: GmailApiServer) -> None:
    service = gmail_service(checked_gmail_server)
    messages = service.users().messages()
    start = current_history_id(service)
    existing = checked_gmail_server.mailbox.newest_first()[0]
    raw = base64.urlsafe_b64encode(NEW_MESSAGE).decode()

    inserted = messages.insert(userId="me", body={"raw": raw, "labelIds": ["INBOX", "UNREAD"]}).execute()
    messages.modify(
        userId="me", id=existing.id, body={"addLabelIds": ["STARRED"], "removeLabelIds": ["UNREAD"]}
    ).execute()
    messages.delete(userId="me", id=inserted["id"]).execute()

    new_ref = {"id": inserted["id"], "threadId": inserted["threadId"]}
    old_ref = {"id": existing.id, "threadId": existing.thread_id}
    first = int(start)
    assert history(service, start) == [
        {
            "id": str(first + 1),
            "messages": [new_ref],
            "messagesAdded": [{"message": {**new_ref, "labelIds": ["INBOX", "UNREAD"]}}],
        },
        {
            "id": str(first + 2),
            "messages": [old_ref],
            "labelsAdded": [
                {"message": {**old_ref, "labelIds": ["INBOX", "STARRED"]}, "labelIds": ["STARRED"]}
            ],
            "labelsRemoved": [
                {"message": {**old_ref, "labelIds": ["INBOX", "STARRED"]}, "labelIds": ["UNREAD"]}
            ],
        },
        {
            "id": str(first + 3),
            "messages": [new_ref],
            "messagesDeleted": [{"message": {**new_ref, "labelIds": ["INBOX", "UNREAD"]}}],
        },
    ]
    assert current_history_id(service) == str(first + 3)  # every change advances the history id


def test_history_types_and_label_id_select_the_records(checked_gmail_server: GmailApiServer) -> None:
    service = gmail_service(checked_gmail_server)
    messages = service.users().messages()
    start = current_history_id(service)
    ids = [message.id for message in checked_gmail_server.mailbox.newest_first()[:4]]

    messages.trash(userId="me", id=ids[0]).execute()
    messages.modify(userId="me", id=ids[1], body={"removeLabelIds": ["UNREAD"]}).execute()
    messages.batchModify(userId="me", body={"ids": ids[2:], "addLabelIds": ["STARRED"]}).execute()
    messages.untrash(userId="me", id=ids[0]).execute()
    added = checked_gmail_server.add_message(NEW_MESSAGE)
    messages.delete(userId="me", id=ids[3]).execute()

    def touched(records: list[dict[str, Any]]) -> list[str]:
        return [record["messages"][0]["id"] for record in records]

    assert touched(history(service, start)) == [ids[0], ids[1], ids[2], ids[3], ids[0], added, ids[3]]
    label_added = history(service, start, historyTypes=["labelAdded"])
    assert touched(label_added) == [ids[0], ids[2], ids[3]]
    assert all(set(record) == {"id", "messages", "labelsAdded"} for record in label_added)
    removed = history(service, start, historyTypes=["labelRemoved"])
    assert [record["labelsRemoved"][0]["labelIds"] for record in removed] == [["UNREAD"], ["TRASH"]]
    both = history(service, start, historyTypes=["messageAdded", "messageDeleted"])
    assert [set(record) - {"id", "messages"} for record in both] == [{"messagesAdded"}, {"messagesDeleted"}]
    assert touched(history(service, start, labelId="TRASH")) == [ids[0], ids[0]]
    assert touched(history(service, start, labelId="STARRED", historyTypes="labelAdded")) == ids[2:4]
    assert touched(history(service, start, maxResults=2)) == touched(history(service, start))  # pages
    bad_type = requests.get(  # the client itself refuses a type outside Google's enum
        f"{checked_gmail_server.url}gmail/v1/users/me/history?startHistoryId={start}&historyTypes=messageTrashed",
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=10,
    )
    assert bad_type.status_code == 400


def test_history_retention_keeps_the_newest_records_and_older_starts_get_404(
    make_gmail_server: Any, check_contract: Any
) -> None:
    server = check_contract(make_gmail_server(history_retention=5))
    service = gmail_service(server)
    messages = service.users().messages()
    start = int(current_history_id(service))
    ids = [message.id for message in server.mailbox.newest_first()[:8]]

    for message_id in ids:
        messages.modify(userId="me", id=message_id, body={"addLabelIds": ["STARRED"]}).execute()

    current = start + 8
    assert [record["id"] for record in history(service, str(current - 5))] == [
        str(history_id) for history_id in range(current - 4, current + 1)
    ]
    for expired in (str(start), str(current - 6)):
        with pytest.raises(HttpError) as raised:
            history(service, expired)
        assert raised.value.resp.status == 404
        assert raised.value.error_details[0]["reason"] == "notFound"
    assert history(service, str(current)) == []


def test_each_token_is_its_own_user_with_its_own_copy_of_the_mailbox(
    checked_gmail_server: GmailApiServer,
) -> None:
    alice, bob = (
        gmail_service(checked_gmail_server, "alice-token"),
        gmail_service(checked_gmail_server, "bob-token"),
    )
    first = checked_gmail_server.mailbox.newest_first()[0].id
    start = current_history_id(bob)

    alice.users().messages().trash(userId="me", id=first).execute()
    alice.users().messages().delete(
        userId="me", id=checked_gmail_server.mailbox.newest_first()[1].id
    ).execute()
    alice.users().labels().create(userId="me", body={"name": "Alice only"}).execute()

    alice_profile = alice.users().getProfile(userId="me").execute()
    bob_profile = bob.users().getProfile(userId="me").execute()
    assert alice_profile["emailAddress"] != bob_profile["emailAddress"]
    assert (
        alice_profile["emailAddress"]
        == gmail_service(checked_gmail_server, "alice-token")
        .users()
        .getProfile(userId="me")
        .execute()["emailAddress"]
    )
    assert (alice_profile["messagesTotal"], bob_profile["messagesTotal"]) == (299, 300)
    assert bob.users().messages().get(userId="me", id=first, format="minimal").execute()["labelIds"] == [
        "INBOX",
        "UNREAD",
    ]
    assert history(bob, start) == []
    assert "Alice only" not in {
        label["name"] for label in bob.users().labels().list(userId="me").execute()["labels"]
    }

    delivered = checked_gmail_server.add_message(NEW_MESSAGE)  # to the mbox: every user gets it

    for user in (alice, bob):
        assert (
            user.users().messages().list(userId="me", maxResults=1).execute()["messages"][0]["id"]
            == delivered
        )
    assert [record["messagesAdded"][0]["message"]["id"] for record in history(bob, start)] == [delivered]


def test_a_token_given_its_own_mailbox_keeps_it(checked_gmail_server: GmailApiServer) -> None:
    own = Mailbox.from_raw_messages([NEW_MESSAGE], email_address="carol@example.org")
    checked_gmail_server.add_mailbox("carol-token", own)
    carol = gmail_service(checked_gmail_server, "carol-token")
    message_id = own.newest_first()[0].id

    carol.users().messages().modify(userId="me", id=message_id, body={"addLabelIds": ["STARRED"]}).execute()

    assert carol.users().getProfile(userId="me").execute()["emailAddress"] == "carol@example.org"
    assert own.get(message_id).label_ids == ("INBOX", "UNREAD", "STARRED")


def test_change_listeners_hear_every_change_with_the_new_history_id(
    make_gmail_server: Any, check_contract: Any
) -> None:
    server = check_contract(make_gmail_server())  # its own server: listeners outlive reset()
    heard: list[tuple[str, int]] = []
    lock = threading.Lock()

    def listener(mailbox: Mailbox, history_id: int) -> None:
        with lock:
            heard.append((mailbox.email_address, history_id))

    server.add_change_listener(listener)
    service = gmail_service(server, "listened-token")
    messages = service.users().messages()
    start = int(current_history_id(service))
    ids = [message.id for message in server.mailbox.newest_first()[:3]]
    address = service.users().getProfile(userId="me").execute()["emailAddress"]
    own_listener: list[int] = []
    server.mailbox_for("listened-token").add_change_listener(own_listener.append)

    messages.modify(userId="me", id=ids[0], body={"addLabelIds": ["STARRED"]}).execute()
    messages.modify(userId="me", id=ids[0], body={"addLabelIds": ["STARRED"]}).execute()  # no change
    messages.batchModify(userId="me", body={"ids": ids, "removeLabelIds": ["UNREAD"]}).execute()
    messages.delete(userId="me", id=ids[2]).execute()

    assert heard == [(address, start + 1), (address, start + 4), (address, start + 5)]
    assert own_listener == [start + 1, start + 4, start + 5]


def test_cli_history_retention_flag_serves_only_the_newest_records(tmp_path: Path) -> None:
    port = free_port()
    command = [sys.executable, "-c", "from emailsync.cli import main; main()", "gmail-server"]
    mbox = Path(__file__).parents[2] / "samples" / "sample.mbox"
    bad = CliRunner().invoke(app, ["gmail-server", "--mbox", str(mbox), "--history-retention", "0"])
    assert bad.exit_code == EXIT_BAD_INPUT and "--history-retention must be at least 1" in bad.output

    process = subprocess.Popen(
        [*command, "--mbox", str(mbox), "--port", str(port), "--history-retention", "3"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        assert process.stdout is not None
        assert b"Local Gmail API server on" in process.stdout.readline()
        service = gmail_api(f"http://127.0.0.1:{port}/", "cli-user")
        start = int(current_history_id(service))
        first = service.users().messages().list(userId="me", maxResults=4).execute()["messages"]
        for message in first:
            service.users().messages().trash(userId="me", id=message["id"]).execute()

        assert len(history(service, str(start + 1))) == 3
        with pytest.raises(HttpError) as expired:
            history(service, str(start))
        assert expired.value.resp.status == 404
    finally:
        stop_process_group(process)


def test_a_user_who_inserted_mail_still_receives_deliveries_to_the_mbox_under_fresh_ids() -> None:
    mbox = Mailbox.from_raw_messages([NEW_MESSAGE])
    user = mbox.fork("user@example.com")
    inserted = user.insert_message(b"Subject: own\r\n\r\nmine\r\n", ["INBOX"], internal_date_ms=5_000)

    delivered = mbox.add_message(b"Subject: news\r\n\r\nfor all\r\n", internal_date_ms=5_000)

    received = [message for message in user.newest_first() if message.raw.startswith(b"Subject: news")]
    assert len(received) == 1 and received[0].id not in {inserted.id, delivered}  # its sequence was taken
    assert [m.id for m in user.newest_first()].count(received[0].id) == 1
    user.delete(received[0].id)
    user.delete(inserted.id)
    assert len(user) == 1 and len(mbox) == 2 and mbox.get(delivered) is not None
    assert [record.deleted for record in user.history(user.history_id - 2)] == [True, True]
