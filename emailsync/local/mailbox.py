"""The mailbox behind the local Gmail API server: mbox entries as Gmail messages.

Each mbox entry becomes one message whose `raw` is the entry's bytes exactly as stored (minus the
`From ` separator line), so what the client downloads is what the corpus holds. Everything Gmail adds
on top (id, threadId, internalDate, labelIds, snippet, historyId) is derived here, deterministically:
the same mbox always yields the same ids.

Derived encodings (base64url raw, snippet, the `full` payload tree) are computed lazily and cached on
the message, because the server answers the same message many times during benchmarks and retries.
"""

from __future__ import annotations

import base64
import bisect
import email
import email.header
import email.message
import email.utils
import hashlib
import html
import mailbox as std_mailbox
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import Any

DEFAULT_LABEL_IDS: tuple[str, ...] = ("INBOX", "UNREAD")
DEFAULT_EMAIL_ADDRESS = "me@example.com"
# Gmail history ids are large opaque integers; starting above 0 keeps clients from relying on small values.
INITIAL_HISTORY_ID = 100_000
SNIPPET_LENGTH = 200

# Dates outside this range are treated as broken (a 2038 spam date would otherwise become "now").
_EARLIEST_PLAUSIBLE_MS = int(datetime(1980, 1, 1, tzinfo=UTC).timestamp() * 1000)
_FALLBACK_DATE_MS = int(datetime(2001, 1, 1, tzinfo=UTC).timestamp() * 1000)
_REPLY_PREFIX = re.compile(r"^\s*((re|fwd?|aw|sv)\s*(\[\d+\])?\s*:\s*)+", re.IGNORECASE)
_MESSAGE_ID = re.compile(r"<([^<>\s]+)>")
_HTML_TAG = re.compile(r"<(script|style)\b.*?</\1\s*>|<[^>]*>", re.IGNORECASE | re.DOTALL)
_WHITESPACE = re.compile(r"\s+")


def read_mbox(path: Path | str) -> list[bytes]:
    """Every entry of an mbox file as stored (minus its `From ` line): the raw messages, in file order."""
    box = std_mailbox.mbox(str(path), create=False)
    try:
        return [box.get_bytes(key, from_=False) for key in box.iterkeys()]
    finally:
        box.close()


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
class StoredMessage:
    """One Gmail message. Immutable apart from the lazily filled caches (safe to share between copies)."""

    id: str
    thread_id: str
    raw: bytes
    internal_date_ms: int
    history_id: int
    sequence: int  # insertion order; breaks ties between equal internal dates
    label_ids: tuple[str, ...] = DEFAULT_LABEL_IDS
    _parsed: email.message.Message | None = field(default=None, repr=False)
    _snippet: str | None = field(default=None, repr=False)
    _raw_b64: str | None = field(default=None, repr=False)
    _payload: dict[str, Any] | None = field(default=None, repr=False)
    _attachments: dict[str, bytes] = field(default_factory=dict, repr=False)
    render_cache: dict[Any, bytes] = field(default_factory=dict, repr=False)  # the server's JSON bodies

    @property
    def parsed(self) -> email.message.Message:
        if self._parsed is None:
            self._parsed = email.message_from_bytes(self.raw)
        return self._parsed

    @property
    def snippet(self) -> str:
        if self._snippet is None:
            try:
                self._snippet = compute_snippet(self.parsed)
            except Exception:  # a snippet is cosmetic; a weird message must still be served
                self._snippet = ""
        return self._snippet

    @property
    def raw_b64(self) -> str:
        if self._raw_b64 is None:
            self._raw_b64 = b64url(self.raw)
        return self._raw_b64

    @property
    def payload(self) -> dict[str, Any]:
        """The `format=full` payload tree (partId, mimeType, filename, headers, body, parts)."""
        if self._payload is None:
            try:
                self._payload = _payload_part(self.id, self.parsed, "", self._attachments)
            except Exception:  # never fail a get because of MIME damage: serve the headers only
                self._payload = {
                    "partId": "",
                    "mimeType": "text/plain",
                    "filename": "",
                    "headers": self.headers(),
                    "body": {"size": len(self.raw)},
                }
        return self._payload

    def attachment(self, attachment_id: str) -> bytes | None:
        """Decoded bytes of the attachment `payload` announced under `attachment_id` (None if unknown)."""
        _ = self.payload
        return self._attachments.get(attachment_id)

    def headers(self) -> list[dict[str, str]]:
        return [{"name": name, "value": decode_header_value(value)} for name, value in self.parsed.items()]

    @property
    def size_estimate(self) -> int:
        return len(self.raw)


class Mailbox:
    """Gmail messages of one user, newest first, with a monotonic history. Thread-safe.

    Build one with `Mailbox.from_mbox(path)` or `Mailbox.from_raw_messages([...])`. With
    `shift_dates=True` every internalDate moves by one constant so the newest message is "now" — the
    raw bytes (and so the Date headers) stay untouched; only internalDate, which `after:`/`before:`
    compare against, moves.
    """

    def __init__(self, email_address: str = DEFAULT_EMAIL_ADDRESS) -> None:
        self.email_address = email_address
        self._lock = threading.RLock()
        self._by_id: dict[str, StoredMessage] = {}
        # newest first: key = (-internal_date_ms, -sequence)
        self._order: list[StoredMessage] = []
        self._order_keys: list[tuple[int, int]] = []
        self._history: list[StoredMessage] = []  # ascending history_id
        self._history_ids: list[int] = []
        self._history_id = INITIAL_HISTORY_ID
        self._oldest_retained_history_id = INITIAL_HISTORY_ID
        self._history_retention: int | None = None
        self._thread_by_message_id: dict[str, str] = {}
        self._thread_by_subject: dict[str, str] = {}
        self._thread_ids: set[str] = set()
        self._sequence = 0
        self.date_shift_ms = 0

    # ----------------------------------------------------------------------------------- building
    @classmethod
    def from_mbox(
        cls,
        path: Path | str,
        *,
        shift_dates: bool = True,
        now: datetime | None = None,
        email_address: str = DEFAULT_EMAIL_ADDRESS,
    ) -> Mailbox:
        return cls.from_raw_messages(
            read_mbox(path), shift_dates=shift_dates, now=now, email_address=email_address
        )

    @classmethod
    def from_raw_messages(
        cls,
        raws: Iterable[bytes],
        *,
        shift_dates: bool = True,
        now: datetime | None = None,
        email_address: str = DEFAULT_EMAIL_ADDRESS,
    ) -> Mailbox:
        now_ms = int((now or datetime.now(UTC)).timestamp() * 1000)
        latest_plausible_ms = now_ms + 86_400_000
        parser = BytesHeaderParser()
        entries: list[tuple[bytes, email.message.Message, int]] = []
        previous_ms: int | None = None
        pending_fallback: list[int] = []  # indexes waiting for a later valid date
        for raw in raws:
            headers = parser.parsebytes(raw)
            millis = _parse_date_ms(headers.get("Date"), latest_plausible_ms)
            if millis is None:
                millis = _parse_date_ms(_received_date(headers), latest_plausible_ms)
            if millis is None:
                if previous_ms is None:
                    pending_fallback.append(len(entries))
                    entries.append((raw, headers, 0))
                    continue
                millis = previous_ms + 1000  # deterministic: just after its neighbour in the file
            entries.append((raw, headers, millis))
            previous_ms = millis
            for index in pending_fallback:  # leading undated messages: just before the first dated one
                raw_p, headers_p, _ = entries[index]
                entries[index] = (raw_p, headers_p, millis - 1000 * (len(pending_fallback) - index))
            pending_fallback.clear()
        for index in pending_fallback:  # no valid date anywhere
            raw_p, headers_p, _ = entries[index]
            entries[index] = (raw_p, headers_p, _FALLBACK_DATE_MS + 1000 * index)

        mailbox = cls(email_address=email_address)
        if shift_dates and entries:
            # whole seconds, so shifted dates stay on the second like the Date headers they come from
            mailbox.date_shift_ms = (now_ms - max(millis for _, _, millis in entries)) // 1000 * 1000
        # history ids and threads are assigned in chronological order, like a mailbox that received them
        order = sorted(range(len(entries)), key=lambda index: (entries[index][2], index))
        ids = [_message_id_for(raw, index) for index, (raw, _, _) in enumerate(entries)]
        with mailbox._lock:
            for index in order:
                raw, headers, millis = entries[index]
                mailbox._insert(raw, headers, millis + mailbox.date_shift_ms, ids[index], index)
            mailbox._sequence = len(entries)
        return mailbox

    def copy(self) -> Mailbox:
        """An independent mailbox sharing the (immutable) messages and their caches; cheap."""
        with self._lock:
            clone = Mailbox(email_address=self.email_address)
            clone._by_id = dict(self._by_id)
            clone._order = list(self._order)
            clone._order_keys = list(self._order_keys)
            clone._history = list(self._history)
            clone._history_ids = list(self._history_ids)
            clone._history_id = self._history_id
            clone._oldest_retained_history_id = self._oldest_retained_history_id
            clone._history_retention = self._history_retention
            clone._thread_by_message_id = dict(self._thread_by_message_id)
            clone._thread_by_subject = dict(self._thread_by_subject)
            clone._thread_ids = set(self._thread_ids)
            clone._sequence = self._sequence
            clone.date_shift_ms = self.date_shift_ms
            return clone

    def _thread_for(self, headers: email.message.Message, own_id: str) -> str:
        references = _message_ids(headers.get("In-Reply-To")) + _message_ids(headers.get("References"))
        for reference in reversed(references):
            thread_id = self._thread_by_message_id.get(reference)
            if thread_id:
                return thread_id
        subject = headers.get("Subject")
        normalized = _normalized_subject(subject)
        is_reply = bool(subject) and _REPLY_PREFIX.match(decode_header_value(subject)) is not None
        if normalized and (is_reply or references):
            thread_id = self._thread_by_subject.get(normalized)
            if thread_id:
                return thread_id
        return own_id

    def _insert(
        self,
        raw: bytes,
        headers: email.message.Message,
        internal_date_ms: int,
        message_id: str,
        sequence: int,
    ) -> StoredMessage:
        thread_id = self._thread_for(headers, message_id)
        self._history_id += 1
        message = StoredMessage(
            id=message_id,
            thread_id=thread_id,
            raw=raw,
            internal_date_ms=internal_date_ms,
            history_id=self._history_id,
            sequence=sequence,
        )
        self._by_id[message_id] = message
        key = (-internal_date_ms, -sequence)
        position = bisect.bisect_left(self._order_keys, key)
        self._order_keys.insert(position, key)
        self._order.insert(position, message)
        self._history.append(message)
        self._history_ids.append(message.history_id)
        self._thread_ids.add(thread_id)
        for own in _message_ids(headers.get("Message-ID")):
            self._thread_by_message_id.setdefault(own, thread_id)
        normalized = _normalized_subject(headers.get("Subject"))
        if normalized:
            self._thread_by_subject.setdefault(normalized, thread_id)
        if self._history_retention is not None:
            self._expire_locked(self._history_id - self._history_retention)
        return message

    def add_message(self, raw: bytes, internal_date_ms: int | None = None) -> str:
        """Deliver a new message (internalDate defaults to now) with the next historyId; returns its id."""
        headers = BytesHeaderParser().parsebytes(raw)
        with self._lock:
            sequence = self._sequence
            self._sequence += 1
            message_id = _message_id_for(raw, sequence)
            while message_id in self._by_id:  # the same bytes delivered twice are two Gmail messages
                sequence = self._sequence
                self._sequence += 1
                message_id = _message_id_for(raw, sequence)
            millis = internal_date_ms if internal_date_ms is not None else int(time.time() * 1000)
            return self._insert(raw, headers, millis, message_id, sequence).id

    # ------------------------------------------------------------------------------------ queries
    def get(self, message_id: str) -> StoredMessage | None:
        return self._by_id.get(message_id)

    def __len__(self) -> int:
        return len(self._by_id)

    @property
    def history_id(self) -> int:
        """The current (latest) historyId of the mailbox."""
        return self._history_id

    @property
    def thread_count(self) -> int:
        return len(self._thread_ids)

    @property
    def oldest_retained_history_id(self) -> int:
        return self._oldest_retained_history_id

    def newest_first(self) -> list[StoredMessage]:
        with self._lock:
            return list(self._order)

    def search(
        self,
        *,
        after_ms: int | None = None,
        before_ms: int | None = None,
        label_ids: Iterable[str] = (),
        cursor: tuple[int, int] | None = None,
    ) -> tuple[list[StoredMessage], int]:
        """Messages with after_ms <= internalDate < before_ms, newest first, starting after `cursor`
        (the (internal_date_ms, sequence) of the last message already returned).
        Returns (remaining matches, total matches for the query)."""
        required = set(label_ids)
        with self._lock:
            keys = self._order_keys
            start = 0 if before_ms is None else bisect.bisect_left(keys, (-(before_ms - 1), -(1 << 62)))
            stop = len(keys) if after_ms is None else bisect.bisect_right(keys, (-after_ms, 1 << 62))
            stop = max(start, stop)
            begin = start
            if cursor is not None:
                begin = max(start, bisect.bisect_right(keys, (-cursor[0], -cursor[1])))
            matches = self._order[begin:stop]
            total = stop - start
            if required:
                matches = [m for m in matches if required.issubset(m.label_ids)]
                total = sum(1 for m in self._order[start:stop] if required.issubset(m.label_ids))
        return matches, total

    def history_since(self, start_history_id: int) -> list[StoredMessage]:
        """Messages added after `start_history_id`, oldest change first. Raises KeyError if expired."""
        with self._lock:
            if start_history_id < self._oldest_retained_history_id:
                raise KeyError(start_history_id)
            position = bisect.bisect_right(self._history_ids, start_history_id)
            return self._history[position:]

    def expire_history_before(self, history_id: int) -> None:
        """Simulate Gmail dropping old history: startHistoryId < history_id now answers 404."""
        with self._lock:
            self._expire_locked(history_id)

    def set_history_retention(self, records: int | None) -> None:
        """Keep only the last `records` history records (None = keep everything)."""
        with self._lock:
            self._history_retention = records
            if records is not None:
                self._expire_locked(self._history_id - records)

    def _expire_locked(self, history_id: int) -> None:
        self._oldest_retained_history_id = max(self._oldest_retained_history_id, history_id)


def _message_id_for(raw: bytes, index: int) -> str:
    """16 lowercase hex chars, like Gmail's ids; stable for the same bytes at the same position."""
    return hashlib.sha256(index.to_bytes(8, "big") + raw).hexdigest()[:16]
