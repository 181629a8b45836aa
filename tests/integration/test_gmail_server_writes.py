"""The local Gmail server's message writes, through the real google-api-python-client over HTTP.

Every response the server gives here is validated against Gmail's discovery document
(`checked_gmail_server`, tests/fixtures/gmail_contract.py)."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from googleapiclient.discovery import Resource
from googleapiclient.errors import HttpError
from googleapiclient.http import BatchHttpRequest

from emailsync.config import QuotaCosts
from emailsync.local.gmail_server.server import GmailApiServer
from tests.fixtures.gmail_contract import RecordedResponse, gmail_contract
from tests.integration.test_gmail_server import NEW_MESSAGE, TOKEN, gmail_service

pytestmark = pytest.mark.integration


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii")


def ids_listed(service: Resource, **kwargs: Any) -> list[str]:
    page = service.users().messages().list(userId="me", **{"maxResults": 500, **kwargs}).execute()
    return [message["id"] for message in page.get("messages", [])]


def labels_of(service: Resource, message_id: str) -> list[str]:
    message = service.users().messages().get(userId="me", id=message_id, format="minimal").execute()
    return message["labelIds"]


def test_the_contract_check_catches_fields_and_types_google_does_not_define() -> None:
    contract = gmail_contract()
    good = b'{"id":"a1","threadId":"a1","labelIds":["INBOX"],"historyId":"7","internalDate":"5"}'
    unknown_field = b'{"id":"a1","threadId":"a1","labels":["INBOX"]}'
    numeric_history_id = b'{"id":"a1","historyId":7}'
    target = "/gmail/v1/users/me/messages/a1"

    assert contract.violations(RecordedResponse("GET", target, 200, good)) == []
    assert (
        "unknown field 'labels'"
        in contract.violations(RecordedResponse("GET", target, 200, unknown_field))[0]
    )
    assert (
        "expected a string"
        in contract.violations(RecordedResponse("GET", target, 200, numeric_history_id))[0]
    )
    assert contract.violations(RecordedResponse("DELETE", target, 204, b"{}"))  # delete answers with no body
    assert contract.violations(RecordedResponse("GET", "/gmail/v1/users/me/nothing", 200, b"{}"))


def test_insert_adds_a_message_with_exactly_the_given_labels(checked_gmail_server: GmailApiServer) -> None:
    service = gmail_service(checked_gmail_server)
    messages = service.users().messages()

    inserted = messages.insert(
        userId="me", body={"raw": b64(NEW_MESSAGE), "labelIds": ["INBOX", "UNREAD"]}
    ).execute()
    archived = messages.insert(userId="me", body={"raw": b64(NEW_MESSAGE)}).execute()

    assert inserted["labelIds"] == ["INBOX", "UNREAD"] and "labelIds" not in archived  # Gmail omits []
    assert inserted["id"] != archived["id"]
    fetched = messages.get(userId="me", id=inserted["id"], format="raw").execute()
    assert base64.urlsafe_b64decode(fetched["raw"]) == NEW_MESSAGE
    assert ids_listed(service, maxResults=2) == [archived["id"], inserted["id"]]  # internalDate: now
    assert ids_listed(service, labelIds=["INBOX"], maxResults=1) == [inserted["id"]]
    assert archived["id"] not in ids_listed(service, q="in:inbox")
    assert archived["id"] in ids_listed(service, q="in:anywhere")
    assert service.users().getProfile(userId="me").execute()["messagesTotal"] == 302


def test_insert_with_date_header_source_takes_the_internal_date_from_the_date_header(
    checked_gmail_server: GmailApiServer,
) -> None:
    messages = gmail_service(checked_gmail_server).users().messages()

    inserted = messages.insert(
        userId="me", body={"raw": b64(NEW_MESSAGE)}, internalDateSource="dateHeader"
    ).execute()

    fetched = messages.get(userId="me", id=inserted["id"], format="minimal").execute()
    assert fetched["internalDate"] == "1795600800000"  # Wed, 25 Nov 2026 10:00:00 +0000


def test_modify_adds_and_removes_labels_and_moves_the_messages_history_id(
    checked_gmail_server: GmailApiServer,
) -> None:
    service = gmail_service(checked_gmail_server)
    message_id = checked_gmail_server.mailbox.newest_first()[5].id
    before = service.users().messages().get(userId="me", id=message_id, format="minimal").execute()

    modified = (
        service.users()
        .messages()
        .modify(userId="me", id=message_id, body={"addLabelIds": ["STARRED"], "removeLabelIds": ["UNREAD"]})
        .execute()
    )

    assert modified == {"id": message_id, "threadId": before["threadId"], "labelIds": ["INBOX", "STARRED"]}
    after = service.users().messages().get(userId="me", id=message_id, format="minimal").execute()
    assert after["labelIds"] == ["INBOX", "STARRED"]
    assert int(after["historyId"]) > int(before["historyId"])
    assert after["historyId"] == service.users().getProfile(userId="me").execute()["historyId"]
    assert message_id in ids_listed(service, q="is:starred is:read")


def test_modify_with_an_unknown_label_is_400_and_an_unknown_message_404(
    checked_gmail_server: GmailApiServer,
) -> None:
    messages = gmail_service(checked_gmail_server).users().messages()
    message_id = checked_gmail_server.mailbox.newest_first()[0].id

    with pytest.raises(HttpError) as bad_label:
        messages.modify(userId="me", id=message_id, body={"addLabelIds": ["Label_404"]}).execute()
    with pytest.raises(HttpError) as missing:
        messages.modify(userId="me", id="0123456789abcdef", body={"addLabelIds": ["STARRED"]}).execute()
    with pytest.raises(HttpError) as not_json:
        messages.modify(userId="me", id=message_id, body=["STARRED"]).execute()

    assert bad_label.value.resp.status == 400 and "Invalid label: Label_404" in bad_label.value.reason
    assert missing.value.resp.status == 404
    assert not_json.value.resp.status == 400
    assert labels_of(gmail_service(checked_gmail_server), message_id) == ["INBOX", "UNREAD"]


def test_batch_modify_changes_every_listed_message_and_answers_204(
    checked_gmail_server: GmailApiServer,
) -> None:
    service = gmail_service(checked_gmail_server)
    ids = [message.id for message in checked_gmail_server.mailbox.newest_first()[:30]]

    result = (
        service.users()
        .messages()
        .batchModify(
            userId="me", body={"ids": ids, "addLabelIds": ["IMPORTANT"], "removeLabelIds": ["INBOX"]}
        )
        .execute()
    )

    assert not result
    assert set(ids_listed(service, q="is:important")) == set(ids)
    assert set(ids).isdisjoint(ids_listed(service, labelIds=["INBOX"]))
    assert all(labels_of(service, message_id) == ["UNREAD", "IMPORTANT"] for message_id in ids[:3])


def test_trash_hides_a_message_from_lists_until_untrash_restores_its_labels(
    checked_gmail_server: GmailApiServer,
) -> None:
    service = gmail_service(checked_gmail_server)
    messages = service.users().messages()
    message_id = checked_gmail_server.mailbox.newest_first()[3].id

    trashed = messages.trash(userId="me", id=message_id).execute()

    assert trashed["labelIds"] == ["INBOX", "UNREAD", "TRASH"]
    assert message_id not in ids_listed(service)
    assert message_id not in ids_listed(service, q="is:unread")
    assert message_id in ids_listed(service, q="in:trash")
    assert message_id in ids_listed(service, labelIds=["TRASH"])
    assert message_id in ids_listed(service, includeSpamTrash=True)
    assert service.users().messages().list(userId="me").execute()["resultSizeEstimate"] == 299
    assert messages.get(userId="me", id=message_id, format="minimal").execute()["labelIds"][-1] == "TRASH"

    untrashed = messages.untrash(userId="me", id=message_id).execute()

    assert untrashed["labelIds"] == ["INBOX", "UNREAD"]
    assert message_id in ids_listed(service)


def test_marking_spam_takes_a_message_out_of_the_inbox_and_lists(
    checked_gmail_server: GmailApiServer,
) -> None:
    service = gmail_service(checked_gmail_server)
    message_id = checked_gmail_server.mailbox.newest_first()[0].id

    spam = (
        service.users()
        .messages()
        .modify(userId="me", id=message_id, body={"addLabelIds": ["SPAM"]})
        .execute()
    )

    assert spam["labelIds"] == ["UNREAD", "SPAM"]
    assert message_id not in ids_listed(service) and message_id in ids_listed(service, q="in:anywhere")
    assert ids_listed(service, q="in:spam") == [message_id]
    trashed = service.users().messages().trash(userId="me", id=message_id).execute()
    assert trashed["labelIds"] == ["UNREAD", "TRASH"]  # trash takes it out of spam
    assert ids_listed(service, q="in:spam") == []
    delivered = checked_gmail_server.add_message(NEW_MESSAGE, token=TOKEN, label_ids=["SPAM"])
    assert ids_listed(service, q="in:spam") == [delivered] and delivered not in ids_listed(service)


def test_delete_and_batch_delete_remove_messages_for_good(checked_gmail_server: GmailApiServer) -> None:
    service = gmail_service(checked_gmail_server)
    messages = service.users().messages()
    newest = [message.id for message in checked_gmail_server.mailbox.newest_first()[:6]]

    assert not messages.delete(userId="me", id=newest[0]).execute()
    assert not messages.batchDelete(userId="me", body={"ids": [*newest[1:4], "0123456789abcdef"]}).execute()

    for message_id in newest[:4]:
        with pytest.raises(HttpError) as gone:
            messages.get(userId="me", id=message_id).execute()
        assert gone.value.resp.status == 404
    with pytest.raises(HttpError) as twice:
        messages.delete(userId="me", id=newest[0]).execute()
    assert twice.value.resp.status == 404
    assert ids_listed(service, q="in:anywhere", maxResults=2) == newest[4:6]
    assert service.users().getProfile(userId="me").execute()["messagesTotal"] == 296


def test_modify_requests_inside_a_batch_carry_their_bodies(checked_gmail_server: GmailApiServer) -> None:
    service = gmail_service(checked_gmail_server)
    ids = [message.id for message in checked_gmail_server.mailbox.newest_first()[:5]]
    answers: dict[str, Any] = {}

    def collect(request_id: str, response: Any, error: HttpError | None) -> None:
        answers[request_id] = error or response

    batch = BatchHttpRequest(callback=collect, batch_uri=checked_gmail_server.batch_url)
    messages = service.users().messages()
    for message_id in ids:
        batch.add(
            messages.modify(userId="me", id=message_id, body={"removeLabelIds": ["UNREAD"]}),
            request_id=message_id,
        )
    batch.add(messages.delete(userId="me", id=ids[0]), request_id="delete")
    batch.execute()

    assert [answers[message_id]["labelIds"] for message_id in ids] == [["INBOX"]] * 5
    assert not isinstance(answers["delete"], HttpError)
    assert set(ids_listed(service, q="is:read")) == set(ids[1:])


def test_writes_cost_gmails_quota_units(make_gmail_server: Any, check_contract: Any) -> None:
    server = check_contract(make_gmail_server(quota_units_per_second=None))
    service = gmail_service(server)
    messages = service.users().messages()
    ids = [message.id for message in server.mailbox.newest_first()[:4]]
    costs = QuotaCosts()

    messages.insert(userId="me", body={"raw": b64(NEW_MESSAGE)}).execute()
    messages.modify(userId="me", id=ids[0], body={"addLabelIds": ["STARRED"]}).execute()
    messages.trash(userId="me", id=ids[1]).execute()
    messages.untrash(userId="me", id=ids[1]).execute()
    messages.delete(userId="me", id=ids[2]).execute()
    messages.batchModify(userId="me", body={"ids": ids[:2], "addLabelIds": ["IMPORTANT"]}).execute()
    messages.batchDelete(userId="me", body={"ids": ids[3:]}).execute()
    service.users().labels().list(userId="me").execute()
    service.users().labels().create(userId="me", body={"name": "Receipts"}).execute()

    assert (costs.messages_insert, costs.messages_modify, costs.messages_delete) == (25, 5, 10)
    assert (costs.messages_batch_modify, costs.labels_list, costs.labels_create) == (50, 1, 5)
    assert (costs.watch, costs.stop) == (100, 50)
    assert server.stats.quota_units == 25 + 5 + 5 + 5 + 10 + 50 + 50 + 1 + 5
    assert server.stats.requests_by_method["messages.batchDelete"] == 1
