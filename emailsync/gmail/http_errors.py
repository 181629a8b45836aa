"""A Gmail HTTP answer as an `emailsync.errors` error, through the one table
`emailsync.errors.GMAIL_ERROR_MAPPING`; tokens never reach the message."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping

from emailsync.errors import (
    GMAIL_ERROR_MAPPING,
    EmailSyncError,
    RetriableError,
    parse_retry_after,
    resolve_http_error,
)


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
