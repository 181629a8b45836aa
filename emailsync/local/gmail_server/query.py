"""Request parameters: Gmail search terms, page tokens, page sizes, the bearer token."""

from __future__ import annotations

import base64
import binascii
import json
import re
from datetime import UTC, datetime
from typing import Any

from emailsync.local.gmail_server.responses import _json

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 500
# q terms accepted and ignored: everything lives in INBOX, there are no chats
_NO_OP_TERMS = {"in:anywhere", "-in:chats", "in:inbox"}


def parse_search_date(value: str) -> int:
    """`after:`/`before:` operand → epoch ms. YYYY/MM/DD (or YYYY-MM-DD, MM/DD/YYYY) is UTC midnight;
    digits are epoch seconds. Raises ValueError (also for impossible dates)."""
    if value.isdigit():
        return int(value) * 1000
    if match := re.fullmatch(r"(\d{4})[/-](\d{1,2})[/-](\d{1,2})", value):
        year, month, day = (int(group) for group in match.groups())
    elif match := re.fullmatch(r"(\d{1,2})/(\d{1,2})/(\d{4})", value):  # Gmail also takes MM/DD/YYYY
        month, day, year = (int(group) for group in match.groups())
    else:
        raise ValueError(value)
    return int(datetime(year, month, day, tzinfo=UTC).timestamp() * 1000)


def parse_query(q: str) -> tuple[int | None, int | None]:
    """Gmail `q` → (after_ms, before_ms). Several bounds combine (the tightest wins). Raises ValueError
    for operators this server does not implement, so a client never silently gets a wrong result."""
    after_ms: int | None = None
    before_ms: int | None = None
    for term in q.split():
        lowered = term.lower()
        if lowered in _NO_OP_TERMS:
            continue
        operator, _, operand = lowered.partition(":")
        if operator in ("after", "before") and operand:
            try:
                millis = parse_search_date(operand)
            except ValueError:
                raise ValueError(f"Invalid date in search term {term!r}") from None
            if operator == "after":
                after_ms = millis if after_ms is None else max(after_ms, millis)
            else:
                before_ms = millis if before_ms is None else min(before_ms, millis)
            continue
        raise ValueError(
            f"Unsupported search term {term!r}: this local Gmail server supports after:, before:, "
            "in:anywhere, in:inbox and -in:chats"
        )
    return after_ms, before_ms


def _encode_token(payload: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(_json(payload)).decode("ascii").rstrip("=")


def _decode_token(token: str) -> dict[str, Any]:
    try:
        decoded = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
        raise ValueError("Invalid pageToken") from exc
    if not isinstance(decoded, dict):
        raise ValueError("Invalid pageToken")
    return decoded


def _page_size(params: dict[str, list[str]]) -> int:
    values = params.get("maxResults")
    if not values or values[-1] == "":
        return DEFAULT_PAGE_SIZE
    size = int(values[-1])  # ValueError → 400
    if size < 1:
        raise ValueError("maxResults must be positive")
    return min(size, MAX_PAGE_SIZE)


def _first(params: dict[str, list[str]], name: str, default: str = "") -> str:
    values = params.get(name)
    return values[-1] if values else default


def _bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()
