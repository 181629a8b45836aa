"""The mailbox behind the local Gmail API server: mbox entries as Gmail messages.

Each mbox entry becomes one message whose `raw` is the entry's bytes exactly as stored (minus the
`From ` separator line), so what the client downloads is what the corpus holds. Everything Gmail adds
on top (id, threadId, internalDate, labelIds, snippet, historyId) is derived here, deterministically:
the same mbox always yields the same ids.

Derived encodings (base64url raw, snippet, the `full` payload tree) are computed lazily and cached on
the message, because the server answers the same message many times during benchmarks and retries.
"""

from __future__ import annotations

import bisect
import email
import email.header
import email.message
import email.utils
import hashlib
import logging
import mailbox as std_mailbox
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from email.parser import BytesHeaderParser
from pathlib import Path

from emailsync.local.stored_message import (
    _FALLBACK_DATE_MS,
    _REPLY_PREFIX,
    StoredMessage,
    _message_ids,
    _normalized_subject,
    _parse_date_ms,
    _received_date,
    decode_header_value,
)

logger = logging.getLogger(__name__)

DEFAULT_EMAIL_ADDRESS = "me@example.com"
# Gmail history ids are large opaque integers; starting above 0 keeps clients from relying on small values.
INITIAL_HISTORY_ID = 100_000


def read_mbox(path: Path | str) -> list[bytes]:
    """Every entry of an mbox file as stored (minus its `From ` line): the raw messages, in file order."""
    box = std_mailbox.mbox(str(path), create=False)
    try:
        return [box.get_bytes(key, from_=False) for key in box.iterkeys()]
    finally:
        box.close()


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
        self._change_listeners: list[Callable[[int], None]] = []  # not copied by copy()

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
            message = self._insert(raw, headers, millis, message_id, sequence)
        self._changed(message.history_id)
        return message.id

    # ------------------------------------------------------------------------------------ changes
    def add_change_listener(self, listener: Callable[[int], None]) -> None:
        """Call `listener(history_id)` after every change of this mailbox (outside its lock)."""
        with self._lock:
            self._change_listeners.append(listener)

    def _changed(self, history_id: int) -> None:
        """Every change that advances the historyId ends here, after the mailbox lock is released."""
        with self._lock:
            listeners = list(self._change_listeners)
        for listener in listeners:
            try:
                listener(history_id)
            except Exception:  # a listener's bug must not fail the change itself
                logger.exception("mailbox change listener failed")

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
