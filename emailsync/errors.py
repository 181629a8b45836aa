"""The one place where errors are classified as retriable or fatal (Meltano/Airbyte style).

Tasks retry exactly the errors `is_retriable` accepts; everything else fails the sync at once.
"""

from __future__ import annotations

import email.utils
import socket
from datetime import UTC, datetime


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
    """401 / invalid_grant: the user must reconnect Gmail."""

    def __init__(self, detail: str = "") -> None:
        message = "Gmail authorization revoked: the user must reconnect Gmail"
        super().__init__(f"{message} ({detail})" if detail else message)


class HistoryExpiredError(FatalError):
    """history.list answered 404: the stored historyId is too old, a full sync is needed."""


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
