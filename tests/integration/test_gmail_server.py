"""The local Gmail API server, exercised through the real google-api-python-client over HTTP."""

from __future__ import annotations

import base64
import email
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from googleapiclient.discovery import Resource
from googleapiclient.errors import HttpError
from googleapiclient.http import BatchHttpRequest

from emailsync.local.gmail_server.quota import QuotaExceeded, TokenBucket
from emailsync.local.gmail_server.server import GmailApiServer
from emailsync.local.mailbox import Mailbox
from tests.fixtures.gmail import gmail_api

# every response a test gets from `gmail_server` must also keep Google's contract (discovery document)
pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("gmail_server_keeps_contract")]

TOKEN = "test-access-token"
NEW_MESSAGE = (
    b"From: Alice <alice@example.org>\r\nTo: me@example.com\r\nSubject: Dinner on Friday?\r\n"
    b"Message-ID: <dinner-1@example.org>\r\nDate: Wed, 25 Nov 2026 10:00:00 +0000\r\n\r\n"
    b"Shall we book the usual place at 8?\r\n"
)


def gmail_service(server: GmailApiServer, token: str = TOKEN) -> Resource:
    return gmail_api(server, token)


def batch_get(
    service: Resource, server: GmailApiServer, ids: list[str], message_format: str = "raw"
) -> list[tuple[dict[str, Any] | None, HttpError | None]]:
    """One batch POST of messages.get; (response, error) per id, in the order of `ids`."""
    results: dict[str, tuple[dict[str, Any] | None, HttpError | None]] = {}

    def collect(request_id: str, response: dict[str, Any] | None, error: HttpError | None) -> None:
        results[request_id] = (response, error)

    batch = BatchHttpRequest(callback=collect, batch_uri=server.batch_url)
    messages = service.users().messages()  # building resources is the client's main cost: do it once
    for index, message_id in enumerate(ids):
        request = messages.get(userId="me", id=message_id, format=message_format)
        batch.add(request, request_id=str(index))
    batch.execute()
    return [results[str(index)] for index in range(len(ids))]


def list_all_ids(service: Resource, **kwargs: Any) -> tuple[list[str], list[int]]:
    """All message ids over every page, plus the resultSizeEstimate of each page."""
    ids: list[str] = []
    estimates: list[int] = []
    page_token: str | None = None
    while True:
        page = service.users().messages().list(userId="me", pageToken=page_token, **kwargs).execute()
        ids.extend(message["id"] for message in page.get("messages", []))
        estimates.append(page["resultSizeEstimate"])
        page_token = page.get("nextPageToken")
        if not page_token:
            return ids, estimates


def epoch_seconds(moment: datetime) -> int:
    return int(moment.timestamp())


# ------------------------------------------------------------------------------------------ mailbox
def test_mailbox_from_the_same_mbox_gets_the_same_gmail_like_ids_and_the_newest_message_is_now(
    sample_mailbox: Mailbox,
) -> None:
    now = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    reloaded = Mailbox.from_mbox(Path(__file__).parents[2] / "samples" / "sample.mbox", now=now)

    ids = [message.id for message in sample_mailbox.newest_first()]
    assert sorted(ids) == sorted(message.id for message in reloaded.newest_first())
    assert len(set(ids)) == 300
    assert all(len(message_id) == 16 and int(message_id, 16) >= 0 for message_id in ids)
    assert reloaded.newest_first()[0].internal_date_ms == int(now.timestamp() * 1000)
    dates = [message.internal_date_ms for message in reloaded.newest_first()]
    assert dates == sorted(dates, reverse=True)


def test_messages_with_a_broken_or_missing_date_get_a_deterministic_internal_date() -> None:
    dated = b"Subject: dated\r\nDate: Mon, 02 Apr 2001 10:00:00 +0000\r\n\r\nbody\r\n"
    broken = b"Subject: broken\r\nDate: the day after tomorrow\r\n\r\nbody\r\n"
    undated = b"Subject: undated\r\n\r\nbody\r\n"
    first = Mailbox.from_raw_messages([dated, broken, undated], shift_dates=False)
    second = Mailbox.from_raw_messages([dated, broken, undated], shift_dates=False)

    def dates(box: Mailbox) -> dict[str, int]:
        return {message.parsed["Subject"]: message.internal_date_ms for message in box.newest_first()}

    assert dates(first) == dates(second)
    assert dates(first)["dated"] == int(datetime(2001, 4, 2, 10, tzinfo=UTC).timestamp() * 1000)
    assert dates(first)["dated"] < dates(first)["broken"] < dates(first)["undated"]


def test_replies_share_the_thread_of_the_message_they_reference() -> None:
    original = b"Message-ID: <a@x>\r\nSubject: Plans\r\nDate: Mon, 02 Apr 2001 10:00:00 +0000\r\n\r\nhi\r\n"
    reply = (
        b"Message-ID: <b@x>\r\nIn-Reply-To: <a@x>\r\nSubject: Re: Plans\r\n"
        b"Date: Mon, 02 Apr 2001 11:00:00 +0000\r\n\r\nyes\r\n"
    )
    unrelated = b"Message-ID: <c@x>\r\nSubject: Other\r\nDate: Mon, 02 Apr 2001 12:00:00 +0000\r\n\r\n.\r\n"
    box = Mailbox.from_raw_messages([reply, unrelated, original], shift_dates=False)
    by_subject = {message.parsed["Subject"]: message for message in box.newest_first()}

    assert by_subject["Re: Plans"].thread_id == by_subject["Plans"].id == by_subject["Plans"].thread_id
    assert by_subject["Other"].thread_id == by_subject["Other"].id
    assert box.thread_count == 2


def test_concurrent_deliveries_get_distinct_ids_and_increasing_history_ids(sample_mailbox: Mailbox) -> None:
    start = sample_mailbox.history_id
    added: list[str] = []
    lock = threading.Lock()

    def deliver() -> None:
        for _ in range(25):
            message_id = sample_mailbox.add_message(NEW_MESSAGE)
            with lock:
                added.append(message_id)

    workers = [threading.Thread(target=deliver) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()

    assert len(set(added)) == 100
    assert sample_mailbox.history_id == start + 100
    delivered = sample_mailbox.history_since(start)
    assert {message.id for message in delivered} == set(added)
    assert [message.history_id for message in delivered] == list(range(start + 1, start + 101))
    assert len(sample_mailbox) == 400


def test_snippet_is_the_start_of_the_text_body_html_escaped_like_gmails() -> None:
    raw = (
        b'Subject: s\r\nMIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\n\r\n--b\r\nContent-Type: text/html\r\n\r\n"
        b"<p>Tom &amp; Jerry's   <b>party</b></p>\r\n--b--\r\n"
    )
    message = Mailbox.from_raw_messages([raw]).newest_first()[0]

    assert message.snippet == "Tom &amp; Jerry&#39;s party"


def test_quota_bucket_holds_one_seconds_worth_of_units_and_refills_at_the_quota_rate() -> None:
    now = [0.0]
    bucket = TokenBucket(250, clock=lambda: now[0])

    for _ in range(50):
        bucket.take(5)
    with pytest.raises(QuotaExceeded) as exceeded:
        bucket.take(5)
    assert exceeded.value.retry_after_seconds == pytest.approx(5 / 250)

    now[0] += 10.0  # idle time refills the bucket only up to its one-second capacity
    for _ in range(50):
        bucket.take(5)
    with pytest.raises(QuotaExceeded):
        bucket.take(5)


# -------------------------------------------------------------------------------------- list / get
def test_list_pages_through_the_whole_mailbox_newest_first(
    gmail_server: GmailApiServer, sample_mailbox: Mailbox
) -> None:
    service = gmail_service(gmail_server)

    ids, estimates = list_all_ids(service, maxResults=120)

    assert ids == [message.id for message in sample_mailbox.newest_first()]
    assert estimates == [300, 300, 300]
    default_page = service.users().messages().list(userId="me").execute()
    assert len(default_page["messages"]) == 100
    assert set(default_page["messages"][0]) == {"id", "threadId"}


def test_list_date_window_includes_after_and_excludes_before(
    gmail_server: GmailApiServer, sample_mailbox: Mailbox
) -> None:
    service = gmail_service(gmail_server)
    messages = sample_mailbox.newest_first()
    newest = datetime.fromtimestamp(messages[0].internal_date_ms / 1000, UTC)
    lower, upper = messages[150], messages[50]  # bounds sitting exactly on two messages' dates
    after_s, before_s = lower.internal_date_ms // 1000, upper.internal_date_ms // 1000
    expected = [m.id for m in messages if after_s * 1000 <= m.internal_date_ms < before_s * 1000]

    ids, estimates = list_all_ids(service, q=f"after:{after_s} before:{before_s}", maxResults=40)

    assert ids == expected
    assert lower.id in ids and upper.id not in ids  # after: is inclusive, before: exclusive
    assert 50 < len(ids) <= 100
    assert estimates == [len(expected)] * len(estimates)

    day = (newest - timedelta(days=30)).date()
    date_query = f"after:{day:%Y/%m/%d} in:anywhere -in:chats"
    day_start_ms = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)
    ids, _ = list_all_ids(service, q=date_query, maxResults=500)
    assert ids == [m.id for m in messages if m.internal_date_ms >= day_start_ms]
    assert 0 < len(ids) < 300

    empty = service.users().messages().list(userId="me", q=f"before:{day:%Y/%m/%d} after:{day:%Y/%m/%d}")
    assert empty.execute() == {"resultSizeEstimate": 0}


def test_unsupported_search_operators_are_rejected_with_400(gmail_server: GmailApiServer) -> None:
    service = gmail_service(gmail_server)

    with pytest.raises(HttpError) as raised:
        service.users().messages().list(userId="me", q="from:alice newer_than:2d").execute()

    assert raised.value.resp.status == 400
    assert "Unsupported search term" in raised.value.reason


def test_get_serves_each_format_with_gmails_fields(
    gmail_server: GmailApiServer, sample_mailbox: Mailbox
) -> None:
    service = gmail_service(gmail_server)
    multipart = next(
        m
        for m in sample_mailbox.newest_first()
        if m.parsed.get_content_maintype() == "multipart" and m.snippet
    )
    get = service.users().messages().get

    raw = get(userId="me", id=multipart.id, format="raw").execute()
    full = get(userId="me", id=multipart.id, format="full").execute()
    metadata = get(
        userId="me", id=multipart.id, format="metadata", metadataHeaders=["Subject", "From"]
    ).execute()
    minimal = get(userId="me", id=multipart.id, format="minimal").execute()

    for resource in (raw, full, metadata, minimal):
        assert resource["id"] == multipart.id
        assert resource["threadId"] == multipart.thread_id
        assert resource["labelIds"] == ["INBOX", "UNREAD"]
        assert resource["internalDate"] == str(multipart.internal_date_ms)
        assert resource["historyId"] == str(multipart.history_id)
        assert resource["sizeEstimate"] == len(multipart.raw)
        assert resource["snippet"] == multipart.snippet
    assert base64.urlsafe_b64decode(raw["raw"]) == multipart.raw
    assert "payload" not in raw and "payload" not in minimal and "raw" not in full
    assert full["payload"]["partId"] == ""
    assert full["payload"]["mimeType"].startswith("multipart/")
    assert [part["partId"] for part in full["payload"]["parts"]][:2] == ["0", "1"][
        : len(full["payload"]["parts"])
    ]
    header_names = {header["name"].lower() for header in full["payload"]["headers"]}
    assert {"subject", "from"} <= header_names
    assert {header["name"].lower() for header in metadata["payload"]["headers"]} <= {"subject", "from"}
    assert metadata["payload"]["headers"]


def test_full_format_body_data_decodes_to_the_text_of_a_plain_message(
    gmail_server: GmailApiServer, sample_mailbox: Mailbox
) -> None:
    plain = next(m for m in sample_mailbox.newest_first() if m.parsed.get_content_type() == "text/plain")
    full = gmail_service(gmail_server).users().messages().get(userId="me", id=plain.id).execute()

    data = base64.urlsafe_b64decode(full["payload"]["body"]["data"])
    assert data == plain.parsed.get_payload(decode=True)
    assert full["payload"]["body"]["size"] == len(data)


def test_attachments_announced_in_the_full_payload_can_be_downloaded(gmail_server: GmailApiServer) -> None:
    attachment = b"%PDF-1.4 not really a pdf\x00\x01"
    raw = (
        b'Subject: invoice\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n"
        b'--b\r\nContent-Type: application/pdf; name="invoice.pdf"\r\nContent-Disposition: attachment; '
        b'filename="invoice.pdf"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
        + base64.b64encode(attachment)
        + b"\r\n--b--\r\n"
    )
    message_id = gmail_server.add_message(raw)
    messages = gmail_service(gmail_server).users().messages()

    payload = messages.get(userId="me", id=message_id).execute()["payload"]
    pdf = payload["parts"][1]
    downloaded = messages.attachments().get(userId="me", messageId=message_id, id=pdf["body"]["attachmentId"])

    assert (pdf["partId"], pdf["filename"], pdf["body"]["size"]) == ("1", "invoice.pdf", len(attachment))
    assert "data" not in pdf["body"]
    assert base64.urlsafe_b64decode(downloaded.execute()["data"]) == attachment


def test_unknown_message_id_is_404_with_googles_error_body(gmail_server: GmailApiServer) -> None:
    response = requests.get(
        gmail_server.url + "gmail/v1/users/me/messages/0123456789abcdef",
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=10,
    )

    bad_format = requests.get(
        gmail_server.url
        + f"gmail/v1/users/me/messages/{gmail_server.mailbox.newest_first()[0].id}?format=html",
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=10,
    )

    assert bad_format.status_code == 400
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == 404
    assert error["status"] == "NOT_FOUND"
    assert error["message"] == "Requested entity was not found."
    assert error["errors"][0]["reason"] == "notFound"


# ------------------------------------------------------------------------------------------ batch
def test_batch_of_100_raw_gets_returns_every_message_byte_for_byte(make_gmail_server: Any) -> None:
    server = make_gmail_server(quota_units_per_second=None)
    service = gmail_service(server)
    messages = server.mailbox.newest_first()[:100]

    results = batch_get(service, server, [m.id for m in messages])

    assert [error for _, error in results] == [None] * 100
    assert [base64.urlsafe_b64decode(response["raw"]) for response, _ in results] == [m.raw for m in messages]
    stats = server.stats
    assert stats.batch_requests == 1
    assert stats.batch_parts == 100
    assert stats.requests_by_method["messages.get"] == 100
    assert stats.quota_units == 500


def test_batch_with_more_than_100_parts_is_rejected_with_400(gmail_server: GmailApiServer) -> None:
    service = gmail_service(gmail_server)
    ids = [m.id for m in gmail_server.mailbox.newest_first()[:101]]

    with pytest.raises(HttpError) as raised:
        batch_get(service, gmail_server, ids)

    assert raised.value.resp.status == 400
    assert gmail_server.stats.requests_by_method.get("messages.get", 0) == 0


def test_batch_parts_beyond_the_per_user_quota_get_their_own_429(gmail_server: GmailApiServer) -> None:
    service = gmail_service(gmail_server)
    ids = [m.id for m in gmail_server.mailbox.newest_first()[:100]]

    results = batch_get(service, gmail_server, ids, message_format="minimal")

    served = [response for response, error in results if error is None]
    limited = [error for _, error in results if error is not None]
    # 250 units/s with a one-second bucket: 50 gets of 5 units fit, the refill during the batch adds a few
    assert 50 <= len(served) < 100
    assert limited and all(error.resp.status == 429 for error in limited)
    assert all(error.resp["retry-after"] == "1" for error in limited)
    assert gmail_server.stats.rate_limited == len(limited)


def test_requests_beyond_the_quota_get_429_with_retry_after(make_gmail_server: Any) -> None:
    server = make_gmail_server(quota_units_per_second=10)
    message_id = server.mailbox.newest_first()[0].id
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {TOKEN}"
    url = f"{server.url}gmail/v1/users/me/messages/{message_id}?format=minimal"

    statuses = [session.get(url, timeout=10) for _ in range(4)]

    assert [response.status_code for response in statuses[:2]] == [200, 200]
    limited = next(response for response in statuses if response.status_code == 429)
    assert int(limited.headers["Retry-After"]) >= 1
    error = limited.json()["error"]
    assert error["status"] == "RESOURCE_EXHAUSTED"
    assert error["errors"][0]["reason"] == "rateLimitExceeded"
    other_user = requests.get(url, headers={"Authorization": "Bearer another-user"}, timeout=10)
    assert other_user.status_code == 200  # quota is per user


def test_fail_rate_injects_server_errors_and_rate_limits(make_gmail_server: Any) -> None:
    server = make_gmail_server(quota_units_per_second=None, fail_rate=1.0, seed=7)
    service = gmail_service(server)
    ids = [m.id for m in server.mailbox.newest_first()[:30]]

    results = batch_get(service, server, ids, message_format="minimal")

    statuses = {error.resp.status for _, error in results if error is not None}
    assert statuses <= {500, 503, 429} and len(statuses) > 1
    assert server.stats.errors_injected == 30


# ------------------------------------------------------------------------- history / profile / auth
def test_history_lists_messages_added_since_a_history_id(gmail_server: GmailApiServer) -> None:
    service = gmail_service(gmail_server)
    start = service.users().getProfile(userId="me").execute()["historyId"]

    added = [gmail_server.add_message(NEW_MESSAGE) for _ in range(3)]
    first = (
        service.users()
        .history()
        .list(userId="me", startHistoryId=start, historyTypes="messageAdded", maxResults=2)
    )
    first_page = first.execute()
    second_page = (
        service.users()
        .history()
        .list(userId="me", startHistoryId=start, pageToken=first_page["nextPageToken"], maxResults=2)
        .execute()
    )

    records = first_page["history"] + second_page["history"]
    assert [record["messagesAdded"][0]["message"]["id"] for record in records] == added
    assert first_page["historyId"] == second_page["historyId"] == str(int(start) + 3)
    assert "nextPageToken" not in second_page
    newest = service.users().messages().list(userId="me", maxResults=3).execute()
    assert {message["id"] for message in newest["messages"]} == set(added)
    nothing_new = service.users().history().list(userId="me", startHistoryId=second_page["historyId"])
    assert "history" not in nothing_new.execute()


def test_history_from_before_the_retention_or_garbage_is_404(gmail_server: GmailApiServer) -> None:
    service = gmail_service(gmail_server)
    current = int(gmail_server.mailbox.history_id)
    gmail_server.expire_history_before(current - 10)

    for start in (str(current - 11), "not-a-history-id"):
        with pytest.raises(HttpError) as raised:
            service.users().history().list(userId="me", startHistoryId=start).execute()
        assert raised.value.resp.status == 404
    still_valid = service.users().history().list(userId="me", startHistoryId=str(current - 10)).execute()
    assert len(still_valid["history"]) == 10


def test_profile_reports_address_totals_and_current_history_id(gmail_server: GmailApiServer) -> None:
    profile = gmail_service(gmail_server).users().getProfile(userId="me").execute()

    assert profile == {
        "emailAddress": "me+597480d4b6@example.com",  # the token's own user: stable, distinct per token
        "messagesTotal": 300,
        "threadsTotal": gmail_server.mailbox.thread_count,
        "historyId": str(gmail_server.mailbox.history_id),
    }
    assert 0 < profile["threadsTotal"] <= 300


def test_each_token_sees_its_own_mailbox(gmail_server: GmailApiServer) -> None:
    gmail_server.add_mailbox(
        "token-of-bob", Mailbox.from_raw_messages([NEW_MESSAGE], email_address="bob@x.org")
    )

    bob = gmail_service(gmail_server, token="token-of-bob").users().getProfile(userId="me").execute()
    default = gmail_service(gmail_server, token="anyone").users().getProfile(userId="me").execute()

    assert (bob["emailAddress"], bob["messagesTotal"]) == ("bob@x.org", 1)
    assert default["messagesTotal"] == 300


def test_missing_or_revoked_token_is_401_unauthenticated(gmail_server: GmailApiServer) -> None:
    url = gmail_server.url + "gmail/v1/users/me/profile"
    assert requests.get(url, headers={"Authorization": "Bearer still-fine"}, timeout=10).status_code == 200

    gmail_server.revoke("revoked-token")
    revoked = requests.get(url, headers={"Authorization": "Bearer revoked-token"}, timeout=10)
    anonymous = requests.get(url, timeout=10)

    for response in (revoked, anonymous):
        assert response.status_code == 401
        assert response.json()["error"]["status"] == "UNAUTHENTICATED"
        assert response.json()["error"]["code"] == 401
    assert requests.get(url, headers={"Authorization": "Bearer still-fine"}, timeout=10).status_code == 200


# ---------------------------------------------------------------------------------------- corpus
def test_every_corpus_message_is_served_raw_byte_for_byte(corpus_dir: Path, make_gmail_server: Any) -> None:
    raws: list[bytes] = []
    for path in sorted(corpus_dir.glob("*.mbox")):
        raws.extend(message.raw for message in Mailbox.from_mbox(path).newest_first())
    server = make_gmail_server(Mailbox.from_raw_messages(raws), quota_units_per_second=None)
    service = gmail_service(server)
    ids, _ = list_all_ids(service, maxResults=500)
    assert len(ids) == len(raws) > 1000

    served: list[bytes] = []
    for start in range(0, len(ids), 100):
        for response, error in batch_get(service, server, ids[start : start + 100]):
            assert error is None
            served.append(base64.urlsafe_b64decode(response["raw"]))
    full = [batch_get(service, server, ids[start : start + 100], "full") for start in range(0, len(ids), 100)]

    assert sorted(served) == sorted(raws)
    assert all(error is None for page in full for _, error in page)
    assert all(email.message_from_bytes(raw) is not None for raw in served[:10])
