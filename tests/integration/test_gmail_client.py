"""The Gmail client against the local Gmail API server, over real HTTP with google-api-python-client."""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest

from emailsync.config import Settings
from emailsync.errors import AuthorizationRevokedError, FatalError, HistoryExpiredError, RetriableError
from emailsync.gmail import settings as gmail_settings
from emailsync.gmail.client import GmailClient
from emailsync.gmail.http_errors import classify_http_error
from emailsync.gmail.pacing import TokenBucket
from emailsync.gmail.settings import RetryPolicy
from emailsync.local.gmail_server.server import GmailApiServer
from emailsync.local.mailbox import INITIAL_HISTORY_ID, Mailbox
from emailsync.models import ProviderCredentials

# every response a test gets from `gmail_server` must also keep Google's contract (discovery document)
pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("gmail_server_keeps_contract")]

NEW_MESSAGE = b"From: new@example.com\r\nTo: me@example.com\r\nSubject: fresh %d\r\n\r\nhello\r\n"


class FakeTime:
    """A clock whose sleeps return at once and only move the clock (retry logic without waiting)."""

    def __init__(self) -> None:
        self.now = 1_000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def make_client(server: GmailApiServer, token: str, *, quota: float = 250.0, **kwargs: object) -> GmailClient:
    settings = Settings(gmail_api_endpoint=server.url, quota_units_per_second=quota)
    return GmailClient(ProviderCredentials(token=token), settings, **kwargs)  # type: ignore[arg-type]


def fake_time_client(server: GmailApiServer, token: str, fake: FakeTime, **kwargs: object) -> GmailClient:
    """Unpaced client whose retry delays are recorded instead of slept (for servers without quota)."""
    bucket = TokenBucket(1e9, 1e9, clock=fake.monotonic, sleep=fake.sleep)
    return make_client(server, token, quota=1e9, bucket=bucket, sleep=fake.sleep, **kwargs)


def at_ms(millis: int) -> datetime:
    return datetime.fromtimestamp(millis / 1000, tz=UTC)


# ------------------------------------------------------------------------------------------ listing


def test_listing_pages_through_the_whole_mailbox_newest_first(
    gmail_server: GmailApiServer, sample_mailbox: Mailbox
) -> None:
    client = make_client(gmail_server, "list-pages")
    ids: list[str] = []
    page_token: str | None = None
    pages = 0
    while True:
        page = client.list_messages(page_token=page_token, max_results=120)
        ids.extend(page.ids)
        pages += 1
        page_token = page.next_page_token
        if not page_token:
            break

    assert pages == 3
    assert ids == [message.id for message in sample_mailbox.newest_first()]
    assert page.result_size_estimate == 300


def test_listing_a_date_window_returns_exactly_the_messages_inside_it(
    gmail_server: GmailApiServer, sample_mailbox: Mailbox
) -> None:
    newest_first = sample_mailbox.newest_first()
    after = at_ms(newest_first[150].internal_date_ms)
    before = at_ms(newest_first[40].internal_date_ms)
    after_ms, before_ms = int(after.timestamp()) * 1000, int(before.timestamp()) * 1000
    expected = [m.id for m in newest_first if after_ms <= m.internal_date_ms < before_ms]

    page = make_client(gmail_server, "list-window").list_messages(after=after, before=before, max_results=500)

    assert page.ids == expected and len(expected) >= 100
    assert page.next_page_token is None


def test_newest_message_before_finds_the_next_older_message_or_none(
    gmail_server: GmailApiServer, sample_mailbox: Mailbox
) -> None:
    newest_first = sample_mailbox.newest_first()
    before = at_ms(newest_first[10].internal_date_ms)
    before_ms = int(before.timestamp()) * 1000
    expected = next(m for m in newest_first if m.internal_date_ms < before_ms)
    client = make_client(gmail_server, "newest-before")

    assert client.newest_message_before(before) == at_ms(expected.internal_date_ms)
    assert client.newest_message_before(at_ms(newest_first[-1].internal_date_ms - 1000)) is None


# ------------------------------------------------------------------------------------------ fetching


def test_more_than_one_batch_of_ids_is_split_and_returned_in_order(
    gmail_server: GmailApiServer, sample_mailbox: Mailbox
) -> None:
    gmail_server.configure(quota_units_per_second=0)
    ids = [m.id for m in sample_mailbox.newest_first()][:250]
    ids.reverse()  # any order the caller likes
    client = make_client(gmail_server, "split", quota=1e9)

    messages = client.get_messages(ids)

    assert [m.id for m in messages] == ids
    assert messages[0].raw == sample_mailbox.get(ids[0]).raw
    assert messages[0].internal_date == sample_mailbox.get(ids[0]).internal_date_ms
    stats = gmail_server.stats
    assert stats.batch_requests >= 3 and stats.batch_parts == 250  # ≤ 100 parts each, none refused
    assert stats.responses_by_status == {200: 250}


def test_failed_parts_are_retried_until_every_message_arrives(
    make_gmail_server: Callable[..., GmailApiServer], sample_mailbox: Mailbox
) -> None:
    server = make_gmail_server(sample_mailbox, quota_units_per_second=0, fail_rate=0.3, seed=1234)
    ids = [m.id for m in sample_mailbox.newest_first()]
    fake = FakeTime()
    client = fake_time_client(server, "flaky", fake, retry_policy=RetryPolicy(max_attempts=10))

    messages = client.get_messages(ids)

    assert [m.id for m in messages] == ids
    stats = server.stats
    assert stats.errors_injected >= 50
    assert {status for status in stats.responses_by_status} == {200, 429, 500, 503}
    assert client.stats.retries == stats.errors_injected
    assert fake.sleeps and all(delay >= 1.0 for delay in fake.sleeps)  # Retry-After 1 / policy delay ≥ 1 s


def test_a_message_failing_on_every_attempt_raises_retriable_after_the_last_attempt(
    make_gmail_server: Callable[..., GmailApiServer], sample_mailbox: Mailbox
) -> None:
    server = make_gmail_server(sample_mailbox, quota_units_per_second=0, fail_rate=1.0, seed=7)
    ids = [m.id for m in sample_mailbox.newest_first()][:3]
    fake = FakeTime()
    client = fake_time_client(server, "always-failing", fake, retry_policy=RetryPolicy(max_attempts=4))

    with pytest.raises(RetriableError, match="3 of 3 messages failing after 4 attempts"):
        client.get_messages(ids)
    assert server.stats.requests_by_method["messages.get"] == 4 * 3
    assert len(fake.sleeps) == 3


def test_a_message_deleted_after_listing_is_skipped_not_fatal(
    gmail_server: GmailApiServer, sample_mailbox: Mailbox
) -> None:
    ids = [m.id for m in sample_mailbox.newest_first()][:3]
    client = make_client(gmail_server, "vanished")

    messages = client.get_messages([ids[0], "0000deadbeef0000", ids[1], ids[2]])

    assert [m.id for m in messages] == ids
    assert client.stats.not_found == 1


def test_client_that_knows_the_quota_gets_no_429(
    make_gmail_server: Callable[..., GmailApiServer], sample_mailbox: Mailbox
) -> None:
    server = make_gmail_server(sample_mailbox, quota_units_per_second=50)  # 10 messages/s
    ids = [m.id for m in sample_mailbox.newest_first()][:25]
    client = make_client(server, "paced", quota=50)

    assert [m.id for m in client.get_messages(ids)] == ids
    assert server.stats.rate_limited == 0
    assert client.stats.paced_seconds > 1.0  # it waited for units instead of being refused


def test_clients_of_one_user_on_several_threads_share_the_quota_without_429(
    make_gmail_server: Callable[..., GmailApiServer], sample_mailbox: Mailbox
) -> None:
    server = make_gmail_server(sample_mailbox, quota_units_per_second=50)  # 10 messages/s for the user
    ids = [m.id for m in sample_mailbox.newest_first()][:24]
    shared_client = make_client(server, "one-user", quota=50)
    second_client = make_client(server, "one-user", quota=50)  # same user: same quota bucket
    jobs = [(shared_client, ids[0:8]), (shared_client, ids[8:16]), (second_client, ids[16:24])]

    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(lambda job: job[0].get_messages(job[1]), jobs))

    assert [[m.id for m in messages] for messages in results] == [job[1] for job in jobs]
    assert server.stats.rate_limited == 0


def test_retry_after_is_honoured_when_the_client_overestimates_the_quota(
    make_gmail_server: Callable[..., GmailApiServer], sample_mailbox: Mailbox
) -> None:
    server = make_gmail_server(sample_mailbox, quota_units_per_second=50)  # 10 messages/s, Retry-After ≥ 1
    ids = [m.id for m in sample_mailbox.newest_first()][:30]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        time.sleep(seconds)

    client = make_client(server, "overeager", quota=5000, sleep=sleep)  # believes it has 100x the quota
    messages = client.get_messages(ids)

    assert [m.id for m in messages] == ids
    # Each 429 pauses the client for the whole Retry-After, so the server refilled before every retry;
    # retrying early would have been refused again and again.
    assert 0 < server.stats.rate_limited <= 35
    assert client.stats.rate_limited == server.stats.rate_limited
    assert sum(slept) >= 1.5 and max(slept) >= 0.9
    assert client.batch_size < gmail_settings.INITIAL_BATCH_SIZE  # batches shrank after the 429s


def test_unreachable_server_is_retriable_once_the_retries_are_spent(
    make_gmail_server: Callable[..., GmailApiServer],
) -> None:
    server = make_gmail_server()
    url = server.url
    server.stop()
    fake = FakeTime()
    client = GmailClient(
        ProviderCredentials(token="unreachable"),
        Settings(gmail_api_endpoint=url, quota_units_per_second=1e9),
        retry_policy=RetryPolicy(max_attempts=3),
        bucket=TokenBucket(1e9, 1e9, clock=fake.monotonic, sleep=fake.sleep),
        sleep=fake.sleep,
    )

    with pytest.raises(RetriableError, match=r"users\.getProfile"):
        client.get_profile()
    assert len(fake.sleeps) == 2 and client.stats.server_errors == 3


# ------------------------------------------------------------------------------------------ history


def test_history_lists_every_added_message_across_pages(
    gmail_server: GmailApiServer, sample_mailbox: Mailbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gmail_settings, "MAX_HISTORY_PAGE_SIZE", 100)
    client = make_client(gmail_server, "history")
    original_ids = sorted(m.id for m in sample_mailbox.newest_first())

    everything = client.list_history(str(INITIAL_HISTORY_ID))
    profile = client.get_profile()
    new_ids = [gmail_server.add_message(NEW_MESSAGE % n) for n in range(3)]
    since_profile = client.list_history(profile.history_id)

    assert sorted(everything.added_ids) == original_ids
    assert gmail_server.stats.requests_by_method["history.list"] == 3 + 1  # 300 changes in 3 pages
    assert since_profile.added_ids == new_ids
    assert since_profile.history_id == client.get_profile().history_id != profile.history_id


def test_expired_history_raises_history_expired(
    gmail_server: GmailApiServer, sample_mailbox: Mailbox
) -> None:
    sample_mailbox.expire_history_before(sample_mailbox.history_id)

    with pytest.raises(HistoryExpiredError, match="full sync"):
        make_client(gmail_server, "expired").list_history(str(INITIAL_HISTORY_ID + 1))


# ------------------------------------------------------------------------------------------ auth


def test_revoked_authorization_raises_and_never_leaks_the_token(
    gmail_server: GmailApiServer, sample_mailbox: Mailbox, caplog: pytest.LogCaptureFixture
) -> None:
    token = "ya29.do-not-log-this-token"
    gmail_server.revoke(token)
    client = make_client(gmail_server, token)
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="emailsync")  # its own level once the flows were imported
    some_id = sample_mailbox.newest_first()[0].id

    raised: list[BaseException] = []
    for call in (
        client.get_profile,
        lambda: client.get_messages([some_id]),
        lambda: client.list_messages(max_results=10),
        lambda: client.list_history(str(INITIAL_HISTORY_ID)),
    ):
        with pytest.raises(AuthorizationRevokedError) as caught:
            call()
        raised.append(caught.value)

    for error in raised:
        assert str(error).startswith("Gmail authorization revoked")
        assert token not in "".join(traceback.format_exception(error))
    assert token not in caplog.text


# ------------------------------------------------------------------------------ pacing and classification


def test_pacing_bucket_spends_no_faster_than_its_rate_and_a_pause_holds_everyone() -> None:
    fake = FakeTime()
    bucket = TokenBucket(rate=100, capacity=50, initial=50, clock=fake.monotonic, sleep=fake.sleep)
    started = fake.now

    for _ in range(20):
        bucket.acquire(25)  # 500 units: the first 50 are the burst, the other 450 come at 100/s
    assert fake.now - started == pytest.approx(4.5)

    bucket.pause(3.0)  # a 429 with Retry-After: 3
    paused_at = fake.now
    bucket.acquire(50)
    assert fake.now - paused_at == pytest.approx(3.0)  # 300 units refilled meanwhile, capped at 50


@pytest.mark.parametrize(
    ("status", "body", "headers", "expected", "retry_after"),
    [
        (429, b'{"error": {"code": 429, "message": "slow down"}}', {"Retry-After": "3"}, RetriableError, 3.0),
        (503, b"<html>unavailable</html>", {}, RetriableError, None),
        (
            403,
            b'{"error": {"code": 403, "errors": [{"reason": "userRateLimitExceeded"}], "message": "x"}}',
            {},
            RetriableError,
            None,
        ),
        (
            403,
            b'{"error": {"code": 403, "errors": [{"reason": "forbidden"}], "message": "no"}}',
            {},
            FatalError,
            None,
        ),
        (
            401,
            b'{"error": {"code": 401, "message": "Invalid Credentials"}}',
            {},
            AuthorizationRevokedError,
            None,
        ),
        (
            400,
            b'{"error": "invalid_grant", "error_description": "Token has been revoked."}',
            {},
            AuthorizationRevokedError,
            None,
        ),
        (400, b'{"error": {"code": 400, "message": "Invalid id value"}}', {}, FatalError, None),
    ],
)
def test_http_errors_are_classified_once_for_all_calls(
    status: int, body: bytes, headers: dict[str, str], expected: type[Exception], retry_after: float | None
) -> None:
    error = classify_http_error(status, body, headers, operation="messages.get")

    assert type(error) is expected
    assert getattr(error, "retry_after", None) == retry_after
    if expected is FatalError:
        assert "messages.get: HTTP" in str(error) and str(status) in str(error)


def test_history_404_is_history_expired_but_message_404_is_not() -> None:
    assert isinstance(classify_http_error(404, b"{}", {}, operation="history.list"), HistoryExpiredError)
    assert type(classify_http_error(404, b"{}", {}, operation="messages.get")) is FatalError
