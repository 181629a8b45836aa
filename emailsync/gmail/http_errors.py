"""A failed Gmail call as an `emailsync.errors` error: HTTP answers through the one table
`emailsync.errors.GMAIL_ERROR_MAPPING`, refused token refreshes and network trouble besides; tokens
never reach the message."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping

import httplib2
from google.auth.exceptions import RefreshError, TransportError
from googleapiclient.errors import HttpError

from emailsync.errors import (
    GMAIL_ERROR_MAPPING,
    EmailSyncError,
    FatalError,
    RetriableError,
    parse_retry_after,
    resolve_http_error,
)

# RFC 6749: a refused grant (invalid_grant, invalid_client, ...) is answered 400.
OAUTH_ERROR_STATUS = 400
# Network trouble: timeouts, resets, refused connections (OSError covers socket.timeout and ConnectionError).
_TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (httplib2.HttpLib2Error, TransportError, OSError)


def _error_details(content: bytes | str | None) -> tuple[str, set[str]]:
    """(server message, error reasons) from a Google JSON error body, or the body text itself."""
    if content is None:
        return "", set()
    text = content.decode("utf-8", "replace") if isinstance(content, bytes) else str(content)
    try:
        body = json.loads(text)
    except ValueError:
        return text.strip()[:300], set()
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, str):  # OAuth token endpoint shape: {"error": "invalid_grant", ...}
        return str(body.get("error_description") or error)[:300], {error}
    if not isinstance(error, dict):
        return text.strip()[:300], set()
    reasons = {
        str(e.get("reason")) for e in error.get("errors") or [] if isinstance(e, dict) and e.get("reason")
    }
    if error.get("status"):
        reasons.add(str(error["status"]))
    return str(error.get("message") or "")[:300], reasons


def scrub(text: str, secrets: Iterable[str | None]) -> str:
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


def classify_http_error(
    status: int,
    content: bytes | str | None,
    headers: Mapping[str, str] | None = None,
    *,
    operation: str = "gmail call",
    secrets: Iterable[str | None] = (),
) -> EmailSyncError:
    """A Gmail HTTP answer as an `emailsync.errors` error, through `emailsync.errors.GMAIL_ERROR_MAPPING`."""
    message, reasons = _error_details(content)
    lowered = {k.lower(): v for k, v in (headers or {}).items()}
    retry_after = parse_retry_after(lowered.get("retry-after"))
    detail = scrub(f"{operation}: HTTP {status}" + (f" {message}" if message else ""), secrets)
    if "invalid_grant" in message:
        reasons.add("invalid_grant")
    resolution = resolve_http_error(GMAIL_ERROR_MAPPING, status, [*sorted(reasons), operation.split(" ")[0]])
    return resolution.error(detail, status=status, retry_after=retry_after)


def is_rate_limit(error: EmailSyncError) -> bool:
    return isinstance(error, RetriableError) and error.status in (429, 403)


def is_not_found(exc: BaseException) -> bool:
    """A 404 answer (the message or history is gone), as opposed to a batch answer that was unreadable."""
    return isinstance(exc, HttpError) and exc.resp is not None and exc.resp.status == 404


def classify_call_error(exc: BaseException, operation: str, secrets: Iterable[str | None]) -> EmailSyncError:
    """Whatever a Gmail call raised (HTTP answer, refused token refresh, network trouble) as an
    `emailsync.errors` error; anything unforeseen is fatal."""
    if isinstance(exc, EmailSyncError):
        return exc
    if isinstance(exc, HttpError) and exc.resp is None:  # BatchError: the batch answer was unreadable
        return RetriableError(f"{operation}: {scrub(str(exc), secrets)[:200]}")
    if isinstance(exc, HttpError):
        return classify_http_error(
            exc.resp.status, exc.content, exc.resp, operation=operation, secrets=secrets
        )
    if isinstance(exc, RefreshError) and getattr(exc, "retryable", False):  # token endpoint 5xx/429
        return RetriableError(f"{operation}: token refresh failed temporarily")
    if isinstance(exc, RefreshError):
        return _classify_refresh_error(exc, operation, secrets)
    if isinstance(exc, _TRANSPORT_ERRORS):
        return RetriableError(f"{operation}: {type(exc).__name__}: {scrub(str(exc), secrets)[:200]}")
    return FatalError(f"{operation}: unexpected {type(exc).__name__}: {scrub(str(exc), secrets)[:200]}")


def _classify_refresh_error(
    exc: RefreshError, operation: str, secrets: Iterable[str | None]
) -> EmailSyncError:
    """The token endpoint refused a refresh: its OAuth error (`invalid_grant` = revoked or expired
    grant) resolved through the one table. No answer at all means the stored credentials cannot be
    refreshed (no refresh token): the access token was refused or expired, as a 401."""
    answer = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], dict) else None
    if answer and answer.get("error"):
        body = json.dumps({key: answer.get(key) for key in ("error", "error_description")})
        return classify_http_error(
            OAUTH_ERROR_STATUS, body, operation=f"{operation} (token refresh)", secrets=secrets
        )
    detail = scrub(str(exc.args[0]) if exc.args else type(exc).__name__, secrets)[:200]
    return classify_http_error(401, detail, operation=f"{operation} (token refresh)", secrets=secrets)
