"""The local Gmail server's labels (system, user, Google Takeout's) and the label filters of
messages.list, through the real google-api-python-client. Every response is validated against
Gmail's discovery document."""

from __future__ import annotations

from typing import Any

import pytest
from googleapiclient.discovery import Resource
from googleapiclient.errors import HttpError

from emailsync.local.gmail_server.server import GmailApiServer
from emailsync.local.mailbox import Mailbox
from tests.integration.test_gmail_server import gmail_service

pytestmark = pytest.mark.integration

SYSTEM_LABELS = {"INBOX", "UNREAD", "STARRED", "IMPORTANT", "SENT", "DRAFT", "SPAM", "TRASH", "CHAT"} | {
    f"CATEGORY_{name}" for name in ("PERSONAL", "SOCIAL", "PROMOTIONS", "UPDATES", "FORUMS")
}


def takeout_message(subject: str, labels: str | None, day: int) -> bytes:
    header = f"X-Gmail-Labels: {labels}\r\n" if labels is not None else ""
    return (
        f"From: shop@example.org\r\nSubject: {subject}\r\nDate: Mon, {day:02d} Nov 2026 10:00:00 +0000\r\n"
        f"{header}\r\nbody of {subject}\r\n"
    ).encode()


TAKEOUT = [
    takeout_message("plain", None, 2),
    takeout_message("promo", "Inbox,Unread,Category Promotions", 3),
    takeout_message("starred", "Inbox,Opened,Starred,Important,Work", 4),
    takeout_message("archived", "Archived,Opened,Work,Family/Kids", 5),
    takeout_message("spam", "Spam,Unread", 6),
    takeout_message("trash", 'Trash,Opened,"Receipts, 2026"', 7),
    takeout_message("sent", "Sent,Opened", 8),
    takeout_message("draft", "Drafts", 9),
]


@pytest.fixture
def takeout_server(make_gmail_server: Any, check_contract: Any) -> GmailApiServer:
    return check_contract(make_gmail_server(Mailbox.from_raw_messages(TAKEOUT), quota_units_per_second=None))


def subjects(server: GmailApiServer, service: Resource, **kwargs: Any) -> list[str]:
    page = service.users().messages().list(userId="me", **kwargs).execute()
    by_id = {message.id: message.parsed["Subject"] for message in server.mailbox.newest_first()}
    return [by_id[message["id"]] for message in page.get("messages", [])]


def test_takeout_labels_header_sets_each_messages_labels(takeout_server: GmailApiServer) -> None:
    service = gmail_service(takeout_server)
    labels = {
        label["name"]: label for label in service.users().labels().list(userId="me").execute()["labels"]
    }
    user = {name: label["id"] for name, label in labels.items() if label["type"] == "user"}

    def labels_of(subject: str) -> list[str]:
        message = next(m for m in takeout_server.mailbox.newest_first() if m.parsed["Subject"] == subject)
        return (
            service.users().messages().get(userId="me", id=message.id, format="minimal").execute()["labelIds"]
        )

    assert set(user) == {"Work", "Family/Kids", "Receipts, 2026"}
    assert sorted(user.values()) == ["Label_1", "Label_2", "Label_3"]
    assert {name for name, label in labels.items() if label["type"] == "system"} == SYSTEM_LABELS
    assert labels_of("plain") == ["INBOX", "UNREAD"]
    assert labels_of("promo") == ["INBOX", "UNREAD", "CATEGORY_PROMOTIONS"]
    assert labels_of("starred") == ["INBOX", "STARRED", "IMPORTANT", user["Work"]]
    assert labels_of("archived") == [user["Work"], user["Family/Kids"]]
    assert labels_of("spam") == ["SPAM", "UNREAD"]
    assert labels_of("trash") == ["TRASH", user["Receipts, 2026"]]
    assert (labels_of("sent"), labels_of("draft")) == (["SENT"], ["DRAFT"])


def test_list_leaves_spam_and_trash_out_unless_asked_for(takeout_server: GmailApiServer) -> None:
    service = gmail_service(takeout_server)

    assert subjects(takeout_server, service) == ["draft", "sent", "archived", "starred", "promo", "plain"]
    assert subjects(takeout_server, service, includeSpamTrash=True)[:4] == ["draft", "sent", "trash", "spam"]
    assert len(subjects(takeout_server, service, q="in:anywhere")) == 8
    assert subjects(takeout_server, service, labelIds=["SPAM"]) == ["spam"]
    assert subjects(takeout_server, service, q="in:trash") == ["trash"]
    assert subjects(takeout_server, service, q="is:unread") == ["promo", "plain"]
    assert subjects(takeout_server, service, q="is:unread", includeSpamTrash=True) == [
        "spam",
        "promo",
        "plain",
    ]
    page = service.users().messages().list(userId="me", q="in:inbox").execute()
    assert page["resultSizeEstimate"] == 3


def test_list_filters_by_label_ids_and_in_is_label_category_terms(takeout_server: GmailApiServer) -> None:
    service = gmail_service(takeout_server)

    def listed(**kwargs: Any) -> list[str]:
        return subjects(takeout_server, service, **kwargs)

    assert listed(labelIds=["INBOX"]) == ["starred", "promo", "plain"]
    assert listed(labelIds=["INBOX", "UNREAD"]) == ["promo", "plain"]
    assert listed(q="in:inbox is:read") == ["starred"]
    assert listed(q="in:inbox -is:unread") == ["starred"]
    assert listed(q="is:starred") == listed(q="is:important") == ["starred"]
    assert listed(q="label:work") == ["archived", "starred"]
    assert listed(q="label:Work -in:inbox") == ["archived"]
    assert listed(q="label:family-kids") == listed(q='label:"Family/Kids"') == ["archived"]
    assert listed(q="category:promotions") == ["promo"]
    assert listed(q="in:sent") == ["sent"] and listed(q="in:drafts") == ["draft"]
    assert listed(q="label:no-such-label") == []
    assert listed(q="-label:work -in:inbox") == ["draft", "sent"]
    with pytest.raises(HttpError) as unsupported:
        listed(q="has:attachment")
    assert unsupported.value.resp.status == 400


def test_labels_create_adds_a_user_label_that_messages_can_carry(takeout_server: GmailApiServer) -> None:
    service = gmail_service(takeout_server)
    labels = service.users().labels()
    plain = next(m for m in takeout_server.mailbox.newest_first() if m.parsed["Subject"] == "plain")

    created = labels.create(
        userId="me", body={"name": "Bills", "labelListVisibility": "labelShowIfUnread"}
    ).execute()
    service.users().messages().modify(
        userId="me", id=plain.id, body={"addLabelIds": [created["id"]]}
    ).execute()

    assert created == {
        "id": "Label_4",
        "name": "Bills",
        "messageListVisibility": "show",
        "labelListVisibility": "labelShowIfUnread",
        "type": "user",
    }
    assert created in labels.list(userId="me").execute()["labels"]
    assert subjects(takeout_server, service, q="label:bills") == ["plain"]
    counted = labels.get(userId="me", id=created["id"]).execute()
    assert (counted["messagesTotal"], counted["messagesUnread"], counted["threadsTotal"]) == (1, 1, 1)
    for taken in ("bills", "Inbox"):
        with pytest.raises(HttpError) as conflict:
            labels.create(userId="me", body={"name": taken}).execute()
        assert conflict.value.resp.status == 409
    with pytest.raises(HttpError) as unknown:
        labels.get(userId="me", id="Label_99").execute()
    assert unknown.value.resp.status == 404
