"""The one place where errors are classified as retriable or fatal (Meltano/Airbyte style).

Tasks retry exactly the errors `is_retriable` accepts; everything else fails the sync at once. HTTP
answers are resolved through one table per service (`GMAIL_ERROR_MAPPING`, `OPENAI_ERROR_MAPPING`,
`resolve_http_error`), and `describe_error` turns whatever ended a sync into its `syncProgress.error`.
"""

from __future__ import annotations

import email.utils
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum


class EmailSyncError(Exception):
    """Base of every error emailsync raises on purpose."""


class RetriableError(EmailSyncError):
    """Transient: rate limits, 5xx, timeouts. `retry_after` (seconds) honours a server's Retry-After."""

    def __init__(self, message: str, *, retry_after: float | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.status = status


class FatalError(EmailSyncError):
    """Permanent: retrying cannot help (revoked authorization, bad input, missing credentials)."""


class AuthorizationRevokedError(FatalError):
    """401 / invalid_grant: the grant was revoked or expired; the user must reconnect Gmail
    (the sync that meets it sets `providerUsers/{id}.services.gmail.needsReauth`)."""

    MESSAGE = "Gmail authorization revoked or expired: reconnect Gmail to resume syncing"

    def __init__(self, detail: str = "") -> None:
        message = self.MESSAGE
        super().__init__(f"{message} ({detail})" if detail else message)


class GmailDisconnectedError(FatalError):
    """`services.gmail.active` turned false while the sync ran: it stops at the next batch boundary."""

    def __init__(self, emails_processed: int) -> None:
        super().__init__(
            f"Gmail was disconnected; sync stopped ({emails_processed} emails processed before it stopped)"
        )


class HistoryExpiredError(FatalError):
    """history.list answered 404: the stored historyId is too old, a full sync is needed."""


class ServiceUnreachableError(FatalError):
    """Firestore or Gmail did not answer at all (nothing listening, or no answer within the timeout)."""

    def __init__(self, service: str, where: str, detail: str = "") -> None:
        self.service, self.where = service, where
        message = UNREACHABLE_MESSAGE.format(service=service, where=where)
        super().__init__(f"{message} ({detail})" if detail else message)


UNREACHABLE_MESSAGE = "{service} at {where} is unreachable"


class LeaseHeldError(EmailSyncError):
    """Another sync for this provider user holds the lease; this trigger is skipped."""


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from an HTTP `Retry-After` value (delay-seconds or an HTTP-date); None if absent
    or unreadable. Never negative."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:  # HTTP-date form
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


_TRANSIENT_BUILTINS: tuple[type[BaseException], ...] = (
    TimeoutError,
    ConnectionError,
    socket.timeout,
)


def is_retriable(exc: BaseException) -> bool:
    """True for errors worth retrying; False for fatal ones and for programming errors."""
    if isinstance(exc, RetriableError):
        return True
    if isinstance(exc, FatalError | LeaseHeldError):
        return False
    if isinstance(exc, _TRANSIENT_BUILTINS):
        return True
    try:  # transient Google API errors (Firestore over gRPC)
        from google.api_core import exceptions as gexc

        if isinstance(
            exc,
            gexc.ServiceUnavailable
            | gexc.DeadlineExceeded
            | gexc.InternalServerError
            | gexc.TooManyRequests
            | gexc.Aborted
            | gexc.ResourceExhausted,
        ):
            return True
    except ImportError:  # pragma: no cover
        pass
    try:
        import httplib2

        if isinstance(exc, httplib2.HttpLib2Error):
            return True
    except ImportError:  # pragma: no cover
        pass
    return False


# ------------------------------------------------------------------------------------------ the table
#
# Errors as data (the shape of Airbyte CDK's default_error_mapping.py): an HTTP answer, by status and the
# Google (or OpenAI) error reason, resolves to retry or fail, the emailsync error raised, and the text a
# user reads. `resolve_http_error` looks up (status, reason) for each reason the body gave, then
# (ANY_STATUS, reason), then (status, None); an unlisted 5xx resolves as 500, anything else as FAIL.


class ResponseAction(StrEnum):
    RETRY = "retry"
    FAIL = "fail"


@dataclass(frozen=True)
class ErrorResolution:
    """What to do with one kind of failed answer. `message` is the text of the error raised (what
    reaches `syncProgress.error`), a template over `detail` (operation, status and the server's
    message) and `status`."""

    action: ResponseAction
    error_class: type[EmailSyncError]
    message: str = "{detail}"

    @property
    def retriable(self) -> bool:
        return self.action is ResponseAction.RETRY

    def error(self, detail: str, *, status: int, retry_after: float | None = None) -> EmailSyncError:
        text = self.message.format(detail=detail, status=status)
        if self.error_class is RetriableError:
            return RetriableError(text, retry_after=retry_after, status=status)
        return self.error_class(text)


ANY_STATUS = 0
ErrorMapping = Mapping[tuple[int, str | None], ErrorResolution]

_RETRY = ErrorResolution(ResponseAction.RETRY, RetriableError)
_FAIL = ErrorResolution(ResponseAction.FAIL, FatalError)
_REVOKED = ErrorResolution(ResponseAction.FAIL, AuthorizationRevokedError)

# Gmail (and Google's OAuth token endpoint). An operation name (its first word) also counts as a reason,
# which is how a 404 of history.list differs from a 404 of messages.get.
GMAIL_ERROR_MAPPING: ErrorMapping = {
    (401, None): _REVOKED,
    (ANY_STATUS, "invalid_grant"): _REVOKED,
    (429, None): _RETRY,
    (403, "rateLimitExceeded"): _RETRY,
    (403, "userRateLimitExceeded"): _RETRY,
    (404, "history.list"): ErrorResolution(
        ResponseAction.FAIL, HistoryExpiredError, "{detail} (history too old: a full sync is needed)"
    ),
    (500, None): _RETRY,
}

OPENAI_ERROR_MAPPING: ErrorMapping = {
    (408, None): _RETRY,
    (409, None): _RETRY,
    (429, None): _RETRY,
    (500, None): _RETRY,
    # The server's message may echo part of the key; this text can reach syncProgress.error.
    (401, None): ErrorResolution(
        ResponseAction.FAIL, FatalError, "OpenAI {status}: the API key was rejected (check OPENAI_API_KEY)"
    ),
    (403, None): ErrorResolution(
        ResponseAction.FAIL, FatalError, "OpenAI {status}: the API key was rejected (check OPENAI_API_KEY)"
    ),
    # 400 bad request, 404 unknown model, 422: retrying cannot help (the default).
}


def resolve_http_error(mapping: ErrorMapping, status: int, reasons: Iterable[str] = ()) -> ErrorResolution:
    """The resolution of an HTTP answer `status` whose body named `reasons`."""
    reasons = list(reasons)
    for reason in reasons:
        if (status, reason) in mapping:
            return mapping[(status, reason)]
    for reason in reasons:
        if (ANY_STATUS, reason) in mapping:
            return mapping[(ANY_STATUS, reason)]
    if (status, None) in mapping:
        return mapping[(status, None)]
    if status >= 500 and (500, None) in mapping:
        return mapping[(500, None)]
    return _FAIL


# What a user reads in `syncProgress.error` for an exception that ended a sync, by exception class
# (first match wins; `{exc}` is the exception's own text).
FAILURE_DESCRIPTIONS: tuple[tuple[type[BaseException] | tuple[type[BaseException], ...], str], ...] = (
    (AuthorizationRevokedError, "{exc}"),
    (GmailDisconnectedError, "{exc}"),
    (ServiceUnreachableError, "{exc}"),
    (LeaseHeldError, "another sync took over: {exc}"),
    (RetriableError, "Gmail or Firestore kept failing after retries: {exc}"),
    ((KeyboardInterrupt, SystemExit), "the sync was interrupted"),
)


def describe_error(exc: BaseException) -> str:
    """The human-readable cause shown in `syncProgress.error`."""
    for kinds, template in FAILURE_DESCRIPTIONS:
        if isinstance(exc, kinds):
            return template.format(exc=exc)
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
