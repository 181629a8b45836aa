"""A message of the local Gmail server's mailbox: what Gmail derives from raw bytes (snippet, payload
tree, headers, attachments), computed lazily and cached because the server answers the same message
many times."""

from __future__ import annotations

import base64
import email
import email.header
import email.message
import email.utils
import hashlib
import html
import re
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

DEFAULT_LABEL_IDS: tuple[str, ...] = ("INBOX", "UNREAD")
SNIPPET_LENGTH = 200
# Dates outside this range are treated as broken (a 2038 spam date would otherwise become "now").
_EARLIEST_PLAUSIBLE_MS = int(datetime(1980, 1, 1, tzinfo=UTC).timestamp() * 1000)
_FALLBACK_DATE_MS = int(datetime(2001, 1, 1, tzinfo=UTC).timestamp() * 1000)
_REPLY_PREFIX = re.compile(r"^\s*((re|fwd?|aw|sv)\s*(\[\d+\])?\s*:\s*)+", re.IGNORECASE)
_MESSAGE_ID = re.compile(r"<([^<>\s]+)>")
_HTML_TAG = re.compile(r"<(script|style)\b.*?</\1\s*>|<[^>]*>", re.IGNORECASE | re.DOTALL)
_WHITESPACE = re.compile(r"\s+")


def b64url(data: bytes) -> str:
    """Gmail's encoding for `raw` and body data: URL-safe base64 with padding."""
    return base64.urlsafe_b64encode(data).decode("ascii")


def _clean_text(value: str) -> str:
    """Undo surrogateescape from compat32 parsing so JSON never carries lone surrogates."""
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def decode_header_value(value: Any) -> str:
    """RFC 2047-decode and unfold a header value the way Gmail presents it; never raises."""
    text = str(value)
    try:
        decoded = str(email.header.make_header(email.header.decode_header(text)))
    except Exception:  # malformed encoded words: Gmail shows the raw value
        decoded = text
    return _clean_text(decoded).replace("\r\n", "").replace("\n", "")


def _parse_date_ms(value: str | None, latest_plausible_ms: int) -> int | None:
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(str(value))
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parsed is None:
        return None
    if parsed.tzinfo is None:  # "-0000" or no zone: RFC 5322 says UTC
        parsed = parsed.replace(tzinfo=UTC)
    try:
        millis = int(parsed.timestamp() * 1000)
    except (OverflowError, OSError, ValueError):
        return None
    if not _EARLIEST_PLAUSIBLE_MS <= millis <= latest_plausible_ms:
        return None
    return millis


def _received_date(headers: email.message.Message) -> str | None:
    """Date of the topmost Received header (arrival at the final hop) — what Gmail's internalDate is."""
    received = headers.get_all("Received") or []
    if not received:
        return None
    _, _, date_part = str(received[0]).rpartition(";")
    return date_part.strip() or None


def _message_ids(value: Any) -> list[str]:
    return _MESSAGE_ID.findall(str(value)) if value else []


def _normalized_subject(value: Any) -> str:
    return _WHITESPACE.sub(" ", _REPLY_PREFIX.sub("", decode_header_value(value or ""))).strip().lower()


def _decode_part_text(part: email.message.Message) -> str:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    charset = part.get_content_charset() or "utf-8"
    try:
        return payload.decode(charset, "replace")
    except LookupError:  # unknown charset name in the wild
        return payload.decode("latin-1")


def compute_snippet(message: email.message.Message) -> str:
    """First ~200 characters of the text body, HTML-escaped like Gmail's snippet; best effort.

    Preference: the first non-empty text/plain part, then text/html (tags stripped), then any other
    text/* part or a multipart whose boundary is broken (its body is then plain text to a reader)."""
    plain: list[email.message.Message] = []
    rich: list[email.message.Message] = []
    other: list[email.message.Message] = []
    for part in message.walk():
        if part.get_content_disposition() == "attachment" or isinstance(part.get_payload(), list):
            continue
        content_type = part.get_content_type()
        if content_type == "text/plain":
            plain.append(part)
        elif content_type == "text/html":
            rich.append(part)
        elif part.get_content_maintype() in ("text", "multipart"):
            other.append(part)
    for part in [*plain, *rich, *other]:
        text = _decode_part_text(part)
        if part.get_content_type() == "text/html":
            text = html.unescape(_HTML_TAG.sub(" ", text))
        collapsed = _WHITESPACE.sub(" ", _clean_text(text)).strip()
        if collapsed:
            return html.escape(collapsed[:SNIPPET_LENGTH], quote=True).replace("&#x27;", "&#39;")
    return ""


def _attachment_id(message_id: str, part_id: str) -> str:
    return "ANGj" + hashlib.sha1(f"{message_id}/{part_id}".encode()).hexdigest()


def _payload_part(
    message_id: str, part: email.message.Message, part_id: str, attachments: dict[str, bytes]
) -> dict[str, Any]:
    """Gmail's payload node for `part`; attachment bodies go to `attachments` (served separately)."""
    node: dict[str, Any] = {
        "partId": part_id,
        "mimeType": part.get_content_type(),
        "filename": _clean_text(part.get_filename() or "") if not part.is_multipart() else "",
        "headers": [{"name": name, "value": decode_header_value(value)} for name, value in part.items()],
    }
    if part.is_multipart() or part.get_content_type() == "message/rfc822":
        children = part.get_payload()
        if not isinstance(children, list):  # a broken multipart: Gmail shows the body as-is
            children = []
        prefix = f"{part_id}." if part_id else ""
        node["body"] = {"size": 0}
        node["parts"] = [
            _payload_part(message_id, child, f"{prefix}{index}", attachments)
            for index, child in enumerate(children)
            if isinstance(child, email.message.Message)
        ]
        return node
    data = part.get_payload(decode=True)
    if not isinstance(data, bytes):
        data = b""
    if node["filename"] or part.get_content_disposition() == "attachment":
        attachment_id = _attachment_id(message_id, part_id)
        attachments[attachment_id] = data
        node["body"] = {"attachmentId": attachment_id, "size": len(data)}
    else:
        node["body"] = {"size": len(data), "data": b64url(data)} if data else {"size": 0}
    return node


@dataclass(slots=True, eq=False)
class MessageContent:
    """The bytes of a message and everything derived from them, filled lazily; shared by every user's
    copy of the message and by every label state of it (the bytes never change)."""

    raw: bytes
    parsed: email.message.Message | None = field(default=None, repr=False)
    snippet: str | None = field(default=None, repr=False)
    raw_b64: str | None = field(default=None, repr=False)
    payload: dict[str, Any] | None = field(default=None, repr=False)
    attachments: dict[str, bytes] = field(default_factory=dict, repr=False)
    # the server's JSON bodies without the per-user fields (labelIds, historyId)
    render_cache: dict[Any, bytes] = field(default_factory=dict, repr=False)


@dataclass(frozen=True, slots=True, eq=False)
class StoredMessage:
    """One Gmail message in one state: immutable. A label change makes a new StoredMessage (see
    `with_labels`) sharing the content, so history records keep the state they describe."""

    id: str
    thread_id: str
    content: MessageContent
    internal_date_ms: int
    history_id: int  # the last history record that changed this message
    sequence: int  # insertion order; breaks ties between equal internal dates
    label_ids: tuple[str, ...] = DEFAULT_LABEL_IDS

    def with_labels(self, label_ids: tuple[str, ...], history_id: int) -> StoredMessage:
        return replace(self, label_ids=label_ids, history_id=history_id)

    @property
    def raw(self) -> bytes:
        return self.content.raw

    @property
    def render_cache(self) -> dict[Any, bytes]:
        return self.content.render_cache

    @property
    def parsed(self) -> email.message.Message:
        content = self.content
        if content.parsed is None:
            content.parsed = email.message_from_bytes(content.raw)
        return content.parsed

    @property
    def snippet(self) -> str:
        content = self.content
        if content.snippet is None:
            try:
                content.snippet = compute_snippet(self.parsed)
            except Exception:  # a snippet is cosmetic; a weird message must still be served
                content.snippet = ""
        return content.snippet

    @property
    def raw_b64(self) -> str:
        content = self.content
        if content.raw_b64 is None:
            content.raw_b64 = b64url(content.raw)
        return content.raw_b64

    @property
    def payload(self) -> dict[str, Any]:
        """The `format=full` payload tree (partId, mimeType, filename, headers, body, parts)."""
        content = self.content
        if content.payload is None:
            try:
                content.payload = _payload_part(self.id, self.parsed, "", content.attachments)
            except Exception:  # never fail a get because of MIME damage: serve the headers only
                content.payload = {
                    "partId": "",
                    "mimeType": "text/plain",
                    "filename": "",
                    "headers": self.headers(),
                    "body": {"size": len(content.raw)},
                }
        return content.payload

    def attachment(self, attachment_id: str) -> bytes | None:
        """Decoded bytes of the attachment `payload` announced under `attachment_id` (None if unknown)."""
        _ = self.payload
        return self.content.attachments.get(attachment_id)

    def headers(self) -> list[dict[str, str]]:
        return [{"name": name, "value": decode_header_value(value)} for name, value in self.parsed.items()]

    @property
    def size_estimate(self) -> int:
        return len(self.content.raw)
