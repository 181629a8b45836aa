"""Request parameters: Gmail search terms, page tokens, page sizes, JSON bodies, the bearer token."""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from emailsync.local.gmail_server.responses import _json

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 500
_TERM = re.compile(r'-?[A-Za-z_]+:"[^"]*"|\S+')
# is:X → (label, wanted): is:read is "not UNREAD"
_IS_TERMS = {
    "unread": ("UNREAD", True),
    "read": ("UNREAD", False),
    "starred": ("STARRED", True),
    "unstarred": ("STARRED", False),
    "important": ("IMPORTANT", True),
}
_SUPPORTED = (
    "after:, before:, in:, label:, is:(un)read, is:(un)starred, is:important, category: "
    "(each but after:/before: may be negated with -)"
)


@dataclass(slots=True)
class SearchQuery:
    """A parsed `q`. Labels are kept as written (names or ids, lower-cased) until resolved against the
    user's labels; `anywhere` (in:anywhere) lifts the default exclusion of SPAM and TRASH."""

    after_ms: int | None = None
    before_ms: int | None = None
    labels: list[str] = field(default_factory=list)
    excluded_labels: list[str] = field(default_factory=list)
    anywhere: bool = False


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


def parse_query(q: str) -> SearchQuery:
    """Gmail `q` → SearchQuery. Several date bounds combine (the tightest wins); terms are ANDed.
    Raises ValueError for operators this server does not implement, so a client never silently gets a
    wrong result."""
    query = SearchQuery()
    for term in _TERM.findall(q):
        negated = term.startswith("-")
        operator, _, operand = term.lstrip("-").partition(":")
        operator, operand = operator.lower(), operand.strip('"').lower()
        if operator in ("after", "before") and operand and not negated:
            try:
                millis = parse_search_date(operand)
            except ValueError:
                raise ValueError(f"Invalid date in search term {term!r}") from None
            if operator == "after":
                query.after_ms = millis if query.after_ms is None else max(query.after_ms, millis)
            else:
                query.before_ms = millis if query.before_ms is None else min(query.before_ms, millis)
            continue
        if operator == "in" and operand == "anywhere" and not negated:
            query.anywhere = True
            continue
        if operator == "in" and operand in ("chats", "chat") and negated:
            continue  # chats are no messages here
        label: str | None = None
        if operator in ("in", "label") and operand:
            label = operand
        elif operator == "category" and operand:
            label = f"category_{operand}"
        elif operator == "is" and operand in _IS_TERMS:
            label, wanted = _IS_TERMS[operand]
            negated = negated == wanted  # is:read is -is:unread
        if label is None:
            raise ValueError(
                f"Unsupported search term {term!r}: this local Gmail server supports {_SUPPORTED}"
            )
        (query.excluded_labels if negated else query.labels).append(label.lower())
    return query


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


def json_body(body: bytes) -> dict[str, Any]:
    """The request's JSON object ({} when empty). ValueError for anything else."""
    if not body.strip():
        return {}
    try:
        decoded = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise ValueError("Invalid JSON payload received.") from None
    if not isinstance(decoded, dict):
        raise ValueError("Invalid JSON payload received: expected an object.")
    return decoded


def _bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()
