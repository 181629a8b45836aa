"""The error table: (HTTP status, reason) → retry or fail, the error raised and the text a user reads."""

from __future__ import annotations

import pytest

from emailsync.errors import (
    GMAIL_ERROR_MAPPING,
    OPENAI_ERROR_MAPPING,
    AuthorizationRevokedError,
    FatalError,
    HistoryExpiredError,
    ResponseAction,
    RetriableError,
    resolve_http_error,
)


@pytest.mark.parametrize(
    ("status", "reasons", "action", "error_class"),
    [
        (429, [], ResponseAction.RETRY, RetriableError),
        (503, [], ResponseAction.RETRY, RetriableError),
        (599, [], ResponseAction.RETRY, RetriableError),
        (403, ["userRateLimitExceeded"], ResponseAction.RETRY, RetriableError),
        (403, ["forbidden"], ResponseAction.FAIL, FatalError),
        (401, [], ResponseAction.FAIL, AuthorizationRevokedError),
        (400, ["invalid_grant"], ResponseAction.FAIL, AuthorizationRevokedError),
        (404, ["history.list"], ResponseAction.FAIL, HistoryExpiredError),
        (404, ["messages.get"], ResponseAction.FAIL, FatalError),
        (400, [], ResponseAction.FAIL, FatalError),
    ],
)
def test_gmail_answers_resolve_through_the_table(status, reasons, action, error_class):
    resolution = resolve_http_error(GMAIL_ERROR_MAPPING, status, reasons)
    assert resolution.action is action and resolution.error_class is error_class
    assert resolution.retriable is (action is ResponseAction.RETRY)


def test_a_resolution_makes_the_error_with_the_text_a_user_reads():
    history = resolve_http_error(GMAIL_ERROR_MAPPING, 404, ["history.list"])
    assert str(history.error("history.list: HTTP 404", status=404)) == (
        "history.list: HTTP 404 (history too old: a full sync is needed)"
    )
    retry = resolve_http_error(GMAIL_ERROR_MAPPING, 429).error("x", status=429, retry_after=3.0)
    assert isinstance(retry, RetriableError) and (retry.retry_after, retry.status) == (3.0, 429)
    key = resolve_http_error(OPENAI_ERROR_MAPPING, 401).error("OpenAI 401: sk-secret", status=401)
    assert type(key) is FatalError and "sk-secret" not in str(key) and "OPENAI_API_KEY" in str(key)


@pytest.mark.parametrize(
    ("status", "retriable"), [(408, True), (409, True), (429, True), (502, True), (404, False)]
)
def test_openai_answers_resolve_through_their_own_table(status, retriable):
    assert resolve_http_error(OPENAI_ERROR_MAPPING, status).retriable is retriable
