"""Robust MIME parsing: raw RFC 5322 bytes → `ParsedEmail`, for any message found in the wild.

`parse_message` never raises and never drops a message. Real mail carries bogus charsets, broken
encoded-words, raw 8-bit headers, missing dates and garbage structure; each defect becomes a short
note in `parse_errors` (and the header block is kept in `raw_headers`) instead of an exception.

We parse with the `compat32` policy because `email.policy.default` raises on unknown charsets while
reading a header or body; decoding is done here, with explicit fallbacks.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from email import policy
from email.message import Message
from email.parser import BytesParser
from typing import Any

from emailsync.gmail import settings as limits
from emailsync.gmail.html_text import html_to_text
from emailsync.gmail.mime_headers import (
    _address_list,
    _clip,
    _date,
    _raw_value,
    _sender,
    _single_line,
    decode_bytes,
    decode_header_text,
)
from emailsync.models import EmailContent

logger = logging.getLogger(__name__)


class ParsedEmail(EmailContent):
    """The content fields of `EmailRecord`: `EmailRecord(**parsed.model_dump(), app_user_id=..., ...)`."""


# ------------------------------------------------------------------------------------------ charsets


def _disposition(part: Message) -> str:
    return str(part.get("Content-Disposition") or "").split(";", 1)[0].strip().lower()


def _is_attachment(part: Message) -> bool:
    """Inline text/plain and text/html are body; everything else is listed as an attachment."""
    return _disposition(part) == "attachment" or part.get_content_type() not in ("text/plain", "text/html")


def _attachment_meta(part: Message, errors: list[str]) -> dict[str, Any]:
    try:
        filename = part.get_filename()
    except Exception:
        filename = None
    if filename:
        filename = _clip(_single_line(decode_header_text(filename, errors, "attachment filename")), 512)
    size = 0
    try:
        if part.is_multipart():  # message/rfc822 attachments carry a parsed message
            size = sum(len(p.as_bytes()) for p in part.get_payload())
        else:
            payload = part.get_payload(decode=True)
            size = len(payload) if isinstance(payload, bytes | str) else 0
    except Exception:
        errors.append("attachment: undecodable payload")
    return {"filename": filename or None, "mimeType": part.get_content_type(), "size": size}


def _leaf_text(part: Message, errors: list[str]) -> str:
    payload = part.get_payload(decode=True)
    if payload is None:
        payload = b""
    if isinstance(payload, str):
        payload = payload.encode("utf-8", "surrogateescape")
    try:
        charset = part.get_content_charset()
    except Exception:
        charset = None
        errors.append("body: unreadable charset parameter")
    return decode_bytes(payload, charset, errors, "body")


class _Walk:
    """Collects text segments (kind, text) and attachment metadata from a message tree."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        self.attachments: list[dict[str, Any]] = []
        self.attachments_not_listed = 0
        self.defects: list[str] = []

    def note_defects(self, part: Message) -> None:
        for defect in getattr(part, "defects", None) or []:
            self.defects.append(f"MIME defect: {type(defect).__name__}")

    def segments(self, part: Message, depth: int = 0) -> list[tuple[str, str]]:
        self.note_defects(part)
        if depth > limits.MAX_MIME_DEPTH:
            self.errors.append("MIME nesting too deep, inner parts skipped")
            return []
        if part.is_multipart():
            children = [c for c in part.get_payload() if isinstance(c, Message)]
            if part.get_content_maintype() == "message" and _disposition(part) == "attachment":
                self._add_attachment(part)
                return []
            if part.get_content_type() == "multipart/alternative":
                return self._alternative(children, depth)
            found: list[tuple[str, str]] = []
            for child in children:
                found.extend(self.segments(child, depth + 1))
            return found
        if part.get_content_maintype() == "multipart":
            # Boundary missing or wrong: the parts are unreadable, but their text is still the body.
            self.errors.append("body: multipart without readable parts, kept as plain text")
            text = _leaf_text(part, self.errors)
            return [("plain", text)] if text.strip() else []
        if _is_attachment(part):
            self._add_attachment(part)
            return []
        kind = "html" if part.get_content_type() == "text/html" else "plain"
        text = _leaf_text(part, self.errors)
        if kind == "html":
            text = html_to_text(text)
        return [(kind, text)] if text.strip() else []

    def _alternative(self, children: list[Message], depth: int) -> list[tuple[str, str]]:
        options = [self.segments(child, depth + 1) for child in children]
        for option in options:  # the sender's own plain text is the most faithful
            if option and all(kind == "plain" for kind, _ in option):
                return option
        for option in reversed(options):  # RFC 2046: the last alternative is the richest
            if option:
                return option
        return []

    def _add_attachment(self, part: Message) -> None:
        if len(self.attachments) >= limits.MAX_ATTACHMENTS:
            self.attachments_not_listed += 1
            return
        self.attachments.append(_attachment_meta(part, self.errors))


def _cap_utf8(text: str, max_bytes: int) -> tuple[str, bool]:
    encoded = text.encode("utf-8", "replace")
    if len(encoded) <= max_bytes:
        return text, False
    return encoded[:max_bytes].decode("utf-8", "ignore"), True  # "ignore" drops a cut multibyte char


def _valid_unicode(text: str) -> str:
    """Firestore rejects lone surrogates; replace them (they come from undecodable raw bytes)."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")


def _header_block(raw: bytes) -> str:
    ends = [i for i in (raw.find(b"\r\n\r\n"), raw.find(b"\n\n")) if i >= 0]
    block = raw[: min(ends)] if ends else raw
    text, _ = _cap_utf8(
        block[: limits.MAX_RAW_HEADERS_BYTES * 2].decode("utf-8", "replace"), limits.MAX_RAW_HEADERS_BYTES
    )
    return text


def _dedupe(items: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for item in items:
        seen.setdefault(_valid_unicode(item), None)
    result = list(seen)
    if len(result) > limits.MAX_PARSE_ERRORS:
        result = [
            *result[: limits.MAX_PARSE_ERRORS - 1],
            f"... {len(result) - limits.MAX_PARSE_ERRORS + 1} more",
        ]
    return result


# ------------------------------------------------------------------------------------------ API


def parse_message(
    raw: bytes,
    *,
    message_id: str,
    thread_id: str | None = None,
    label_ids: Iterable[str] = (),
    internal_date: int | None = None,
    snippet: str = "",
) -> ParsedEmail:
    """Parse one raw RFC 5322 message. Never raises; defects are listed in `parse_errors`."""
    common: dict[str, Any] = {
        "message_id": message_id,
        "thread_id": thread_id,
        "label_ids": [str(label) for label in label_ids],
        "internal_date": internal_date,
        "snippet": _valid_unicode(snippet or ""),
    }
    try:
        return _parse(raw, common)
    except Exception as exc:  # last resort: a record with what we can salvage, never a lost message
        logger.warning("message %s could not be parsed: %s", message_id, type(exc).__name__, exc_info=True)
        return _salvage(raw, common, exc)


def _parse(raw: bytes, common: dict[str, Any]) -> ParsedEmail:
    errors: list[str] = []
    if not raw:
        errors.append("empty message")
    message = BytesParser(policy=policy.compat32).parsebytes(raw)
    if not message.keys():
        errors.append("no headers found")

    subject = _single_line(decode_header_text(_raw_value(message, "Subject"), errors, "Subject"))
    sender = _sender(message, errors)
    to = _address_list(message, "To", errors)
    cc = _address_list(message, "Cc", errors)
    date = _date(message, common["internal_date"], errors)

    walk = _Walk(errors)
    segments = walk.segments(message)
    body = "\n\n".join(text.strip() for _, text in segments)
    body = _valid_unicode(body)
    body, truncated = _cap_utf8(body, limits.MAX_BODY_BYTES)
    if truncated:
        errors.append(f"body: truncated to {limits.MAX_BODY_BYTES} bytes")
    if walk.attachments_not_listed:
        errors.append(f"attachments: {walk.attachments_not_listed} more not listed")

    all_errors = _dedupe([*walk.defects, *errors])
    return ParsedEmail(
        **common,
        subject=_valid_unicode(_clip(subject, limits.MAX_HEADER_CHARS)),
        sender=_valid_unicode(sender),
        to=[_valid_unicode(a) for a in to],
        cc=[_valid_unicode(a) for a in cc],
        date=date,
        body_text=body,
        truncated=truncated,
        parse_errors=all_errors,
        raw_headers=_header_block(raw) if all_errors else None,
        attachments=walk.attachments,
    )


_SALVAGE_HEADER = re.compile(rb"^(subject|from):[ \t]*(.*)$", re.IGNORECASE | re.MULTILINE)


def _salvage(raw: Any, common: dict[str, Any], exc: BaseException) -> ParsedEmail:
    try:
        data = raw if isinstance(raw, bytes) else bytes(raw or b"")
    except Exception:
        data = b""
    found: dict[str, str] = {}
    try:
        block = data[: limits.MAX_RAW_HEADERS_BYTES]
        for match in _SALVAGE_HEADER.finditer(block):
            key = match.group(1).lower().decode()
            found.setdefault(key, decode_header_text(match.group(2).decode("utf-8", "replace"), [], key))
    except Exception:
        pass
    body = ""
    try:
        text = data.decode("utf-8", "replace")
        split = re.split(r"\r?\n\r?\n", text, maxsplit=1)
        body = split[1] if len(split) == 2 else ""
    except Exception:
        body = ""
    body, truncated = _cap_utf8(_valid_unicode(body), limits.MAX_BODY_BYTES)
    return ParsedEmail(
        **common,
        subject=_valid_unicode(_clip(_single_line(found.get("subject", "")), limits.MAX_HEADER_CHARS)),
        sender=_valid_unicode(_clip(_single_line(found.get("from", "")), limits.MAX_HEADER_CHARS)),
        date=_date_from_internal(common["internal_date"]),
        body_text=body,
        truncated=truncated,
        parse_errors=[_valid_unicode(f"parser failure: {type(exc).__name__}: {str(exc)[:200]}")],
        raw_headers=_header_block(data),
    )


def _date_from_internal(internal_date: int | None) -> datetime | None:
    if internal_date is None:
        return None
    try:
        return datetime.fromtimestamp(internal_date / 1000, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None
