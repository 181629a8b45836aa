"""The mailbox of one user of the local Gmail API server: mbox entries as Gmail messages.

Each mbox entry becomes one message whose `raw` is the entry's bytes exactly as stored (minus the
`From ` separator line), so what the client downloads is what the corpus holds. Everything Gmail adds
on top (id, threadId, internalDate, labelIds, snippet, historyId) is derived here, deterministically:
the same mbox always yields the same ids. Labels come from Takeout's `X-Gmail-Labels` header, else
INBOX + UNREAD (mail as delivered).

Changes (deliveries, inserts, label changes, trash, delete) each write one history record
(`emailsync/local/history.py`) and then call the change listeners with the new historyId.

A `fork()` is another user's copy of the mailbox: it shares the (immutable) messages, keeps its own
labels and history, and still receives what is delivered to the mailbox it was forked from
(`add_message`), so a test's delivery reaches every user served from the same mbox.
"""

from __future__ import annotations

import bisect
import email.message
import hashlib
import logging
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from email.parser import BytesHeaderParser
from pathlib import Path

from emailsync.local.history import HistoryLog, HistoryRecord
from emailsync.local.labels import INBOX, SPAM, TRASH, UNMODIFIABLE_LABEL_IDS, Label, Labels
from emailsync.local.mbox_reading import dated_entries, read_mbox
from emailsync.local.stored_message import (
    _REPLY_PREFIX,
    DEFAULT_LABEL_IDS,
    MessageContent,
    StoredMessage,
    _message_ids,
    _normalized_subject,
    decode_header_value,
)

__all__ = ["DEFAULT_EMAIL_ADDRESS", "INITIAL_HISTORY_ID", "Mailbox", "read_mbox"]

DEFAULT_EMAIL_ADDRESS = "me@example.com"
# Gmail history ids are large opaque integers; starting above 0 keeps clients from relying on small values.
INITIAL_HISTORY_ID = 100_000
MAX_IDS_PER_BATCH = 1000  # batchModify / batchDelete, as Gmail's
ChangeListener = Callable[[int], None]
_log = logging.getLogger(__name__)


class Mailbox:
    """Gmail messages of one user, newest first, with labels and a monotonic history. Thread-safe.

    Build one with `Mailbox.from_mbox(path)` or `Mailbox.from_raw_messages([...])`. With
    `shift_dates=True` every internalDate moves by one constant so the newest message is "now" — the
    raw bytes (and so the Date headers) stay untouched; only internalDate, which `after:`/`before:`
    compare against, moves.
    """

    def __init__(self, email_address: str = DEFAULT_EMAIL_ADDRESS) -> None:
        self.email_address = email_address
        self.labels = Labels()  # read under the lock (`label_list()`), changed through `create_label`
        self._lock = threading.RLock()
        self._by_id: dict[str, StoredMessage] = {}
        # newest first: key = (-internal_date_ms, -sequence)
        self._order: list[StoredMessage] = []
        self._order_keys: list[tuple[int, int]] = []
        self._history = HistoryLog(INITIAL_HISTORY_ID)
        self._history_id = INITIAL_HISTORY_ID
        self._thread_by_message_id: dict[str, str] = {}
        self._thread_by_subject: dict[str, str] = {}
        self._thread_sizes: Counter[str] = Counter()
        self._sequence = 0
        self.date_shift_ms = 0
        self._listeners: list[ChangeListener] = []
        self._followers: weakref.WeakSet[Mailbox] = weakref.WeakSet()

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
        entries = dated_entries(raws, now_ms)
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
                takeout = headers.get("X-Gmail-Labels")
                label_ids = (
                    mailbox.labels.from_takeout(decode_header_value(takeout))
                    if takeout is not None
                    else DEFAULT_LABEL_IDS
                )
                content = MessageContent(raw)
                mailbox._insert(
                    content, headers, millis + mailbox.date_shift_ms, ids[index], index, label_ids
                )
            mailbox._sequence = len(entries)
        return mailbox

    def copy(self) -> Mailbox:
        """An independent mailbox sharing the (immutable) messages and their caches; cheap.
        Listeners and forks are not copied."""
        with self._lock:
            clone = Mailbox(email_address=self.email_address)
            clone.labels = self.labels.copy()
            clone._by_id = dict(self._by_id)
            clone._order = list(self._order)
            clone._order_keys = list(self._order_keys)
            clone._history = self._history.copy()
            clone._history_id = self._history_id
            clone._thread_by_message_id = dict(self._thread_by_message_id)
            clone._thread_by_subject = dict(self._thread_by_subject)
            clone._thread_sizes = Counter(self._thread_sizes)
            clone._sequence = self._sequence
            clone.date_shift_ms = self.date_shift_ms
            return clone

    def fork(self, email_address: str) -> Mailbox:
        """Another user's copy that keeps receiving what `add_message` delivers to this mailbox."""
        with self._lock:
            clone = self.copy()
            clone.email_address = email_address
            self._followers.add(clone)
            return clone

    def unfork(self, clone: Mailbox) -> None:
        """Stop delivering to a fork (its user is gone)."""
        with self._lock:
            self._followers.discard(clone)

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
        content: MessageContent,
        headers: email.message.Message,
        internal_date_ms: int,
        message_id: str,
        sequence: int,
        label_ids: tuple[str, ...],
    ) -> StoredMessage:
        thread_id = self._thread_for(headers, message_id)
        self._history_id += 1
        message = StoredMessage(
            id=message_id,
            thread_id=thread_id,
            content=content,
            internal_date_ms=internal_date_ms,
            history_id=self._history_id,
            sequence=sequence,
            label_ids=label_ids,
        )
        self._by_id[message_id] = message
        key = _order_key(message)
        position = bisect.bisect_left(self._order_keys, key)
        self._order_keys.insert(position, key)
        self._order.insert(position, message)
        self._thread_sizes[thread_id] += 1
        for own in _message_ids(headers.get("Message-ID")):
            self._thread_by_message_id.setdefault(own, thread_id)
        normalized = _normalized_subject(headers.get("Subject"))
        if normalized:
            self._thread_by_subject.setdefault(normalized, thread_id)
        self._history.append(HistoryRecord(self._history_id, message, added=True))
        return message

    def _new_id(self, raw: bytes) -> tuple[str, int]:
        """A fresh (id, sequence): the same bytes delivered twice are two Gmail messages."""
        sequence = self._sequence
        self._sequence += 1
        message_id = _message_id_for(raw, sequence)
        while message_id in self._by_id:
            sequence = self._sequence
            self._sequence += 1
            message_id = _message_id_for(raw, sequence)
        return message_id, sequence

    def add_message(
        self, raw: bytes, internal_date_ms: int | None = None, label_ids: Iterable[str] | None = None
    ) -> str:
        """Deliver a new message (internalDate defaults to now, labels to INBOX + UNREAD) with the next
        historyId, here and in every fork of this mailbox; returns its id."""
        headers = BytesHeaderParser().parsebytes(raw)
        labels = tuple(label_ids) if label_ids is not None else DEFAULT_LABEL_IDS
        millis = internal_date_ms if internal_date_ms is not None else int(time.time() * 1000)
        with self._lock:
            self._check_labels(labels)
            message_id, sequence = self._new_id(raw)
            message = self._insert(MessageContent(raw), headers, millis, message_id, sequence, labels)
            history_id = self._history_id
            followers = list(self._followers)
        self._notify(history_id)
        for follower in followers:
            follower._deliver(message, headers)
        return message.id

    def _deliver(self, message: StoredMessage, headers: email.message.Message) -> None:
        """A delivery to the mailbox this one was forked from (same id unless it is taken here)."""
        with self._lock:
            labels = tuple(label for label in message.label_ids if label in self.labels)
            if message.sequence >= self._sequence and message.id not in self._by_id:
                message_id, sequence = message.id, message.sequence
                self._sequence = sequence + 1
            else:  # this user has inserted messages of its own since the fork
                message_id, sequence = self._new_id(message.raw)
            self._insert(message.content, headers, message.internal_date_ms, message_id, sequence, labels)
            history_id = self._history_id
            followers = list(self._followers)
        self._notify(history_id)
        for follower in followers:
            follower._deliver(message, headers)

    def insert_message(
        self, raw: bytes, label_ids: Iterable[str] = (), internal_date_ms: int | None = None
    ) -> StoredMessage:
        """`messages.insert`: this user's mailbox only, with exactly `label_ids` (like IMAP APPEND)."""
        headers = BytesHeaderParser().parsebytes(raw)
        labels = tuple(dict.fromkeys(label_ids))
        millis = internal_date_ms if internal_date_ms is not None else int(time.time() * 1000)
        with self._lock:
            self._check_labels(labels)
            message_id, sequence = self._new_id(raw)
            message = self._insert(MessageContent(raw), headers, millis, message_id, sequence, labels)
            history_id = self._history_id
        self._notify(history_id)
        return message

    # ------------------------------------------------------------------------------ label changes
    def modify(self, message_id: str, add: Iterable[str] = (), remove: Iterable[str] = ()) -> StoredMessage:
        """`messages.modify`. KeyError for an unknown message, ValueError for an invalid label."""
        add, remove = tuple(add), tuple(remove)
        with self._lock:
            self._check_labels(add + remove, modifiable=True)
            message = self._by_id[message_id]
            changed = self._change_labels(message, add, remove)
            history_id = self._history_id
        if changed is not message:
            self._notify(history_id)
        return changed

    def batch_modify(
        self, message_ids: Iterable[str], add: Iterable[str] = (), remove: Iterable[str] = ()
    ) -> None:
        """`messages.batchModify`: one history record per message changed; unknown ids are skipped."""
        ids, add, remove = _batch_ids(message_ids), tuple(add), tuple(remove)
        with self._lock:
            self._check_labels(add + remove, modifiable=True)
            before = self._history_id
            for message_id in ids:
                if (message := self._by_id.get(message_id)) is not None:
                    self._change_labels(message, add, remove)
            history_id = self._history_id
        if history_id != before:
            self._notify(history_id)

    def trash(self, message_id: str) -> StoredMessage:
        """`messages.trash`: TRASH on (and SPAM off); the other labels stay for `untrash`."""
        return self.modify(message_id, add=(TRASH,))

    def untrash(self, message_id: str) -> StoredMessage:
        return self.modify(message_id, remove=(TRASH,))

    def _change_labels(
        self, message: StoredMessage, add: tuple[str, ...], remove: tuple[str, ...]
    ) -> StoredMessage:
        """Apply a label change as Gmail does (SPAM takes a message out of INBOX and TRASH; TRASH out of
        SPAM); writes one history record unless nothing changed. Caller holds the lock."""
        implied: set[str] = set()
        if SPAM in add:
            implied |= {INBOX, TRASH}
        if TRASH in add:
            implied.add(SPAM)
        dropped = (set(remove) | implied) - set(add)
        labels = [label for label in message.label_ids if label not in dropped]
        labels.extend(label for label in dict.fromkeys(add) if label not in labels)
        added = tuple(label for label in labels if label not in message.label_ids)
        removed = tuple(label for label in message.label_ids if label not in labels)
        if not added and not removed:
            return message
        self._history_id += 1
        changed = message.with_labels(tuple(labels), self._history_id)
        position = bisect.bisect_left(self._order_keys, _order_key(message))
        self._order[position] = changed
        self._by_id[message.id] = changed
        self._history.append(
            HistoryRecord(self._history_id, changed, labels_added=added, labels_removed=removed)
        )
        return changed

    def _check_labels(self, label_ids: Iterable[str], *, modifiable: bool = False) -> None:
        for label_id in label_ids:
            if label_id not in self.labels or (modifiable and label_id in UNMODIFIABLE_LABEL_IDS):
                raise ValueError(f"Invalid label: {label_id}")

    # ----------------------------------------------------------------------------------- deletion
    def delete(self, message_id: str) -> None:
        """`messages.delete`: gone for good (a messageDeleted record). KeyError for an unknown id."""
        with self._lock:
            self._delete(self._by_id[message_id])
            history_id = self._history_id
        self._notify(history_id)

    def batch_delete(self, message_ids: Iterable[str]) -> None:
        """`messages.batchDelete`: unknown ids are skipped."""
        ids = _batch_ids(message_ids)
        with self._lock:
            before = self._history_id
            for message_id in ids:
                if (message := self._by_id.get(message_id)) is not None:
                    self._delete(message)
            history_id = self._history_id
        if history_id != before:
            self._notify(history_id)

    def _delete(self, message: StoredMessage) -> None:
        position = bisect.bisect_left(self._order_keys, _order_key(message))
        del self._order[position]
        del self._order_keys[position]
        del self._by_id[message.id]
        self._thread_sizes[message.thread_id] -= 1
        if self._thread_sizes[message.thread_id] <= 0:
            del self._thread_sizes[message.thread_id]
        self._history_id += 1
        self._history.append(HistoryRecord(self._history_id, message, deleted=True))

    # ------------------------------------------------------------------------------------- labels
    def create_label(
        self,
        name: str,
        message_list_visibility: str | None = "show",
        label_list_visibility: str | None = "labelShow",
        color: dict[str, str] | None = None,
    ) -> Label:
        """`labels.create`; ValueError for a bad request, LabelConflict for a name in use."""
        with self._lock:
            return self.labels.create(name, message_list_visibility, label_list_visibility, color)

    def label_list(self) -> list[Label]:
        with self._lock:
            return self.labels.all()

    def label_counts(self, label_id: str) -> dict[str, int]:
        """messagesTotal, messagesUnread, threadsTotal, threadsUnread of one label (labels.get)."""
        with self._lock:
            tagged = [message for message in self._order if label_id in message.label_ids]
        unread = [message for message in tagged if "UNREAD" in message.label_ids]
        return {
            "messagesTotal": len(tagged),
            "messagesUnread": len(unread),
            "threadsTotal": len({message.thread_id for message in tagged}),
            "threadsUnread": len({message.thread_id for message in unread}),
        }

    # ---------------------------------------------------------------------------------- listeners
    def add_change_listener(self, listener: ChangeListener) -> None:
        """Call `listener(history_id)` after every change (outside the lock, on the changing thread).
        A listener that raises is logged and does not fail the change."""
        with self._lock:
            self._listeners.append(listener)

    def remove_change_listener(self, listener: ChangeListener) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def _notify(self, history_id: int) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(history_id)
            except Exception:
                _log.exception("mailbox change listener failed")

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
        return len(self._thread_sizes)

    @property
    def oldest_retained_history_id(self) -> int:
        return self._history.oldest_retained

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
        excluded_label_ids: Iterable[str] = (),
    ) -> tuple[list[StoredMessage], int]:
        """Messages with after_ms <= internalDate < before_ms, carrying every one of `label_ids` and none
        of `excluded_label_ids`, newest first, starting after `cursor` (the (internal_date_ms, sequence)
        of the last message already returned). Returns (remaining matches, total matches for the query)."""
        required, excluded = set(label_ids), set(excluded_label_ids)
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
            if required or excluded:

                def wanted(message: StoredMessage) -> bool:
                    labels = message.label_ids
                    return required.issubset(labels) and excluded.isdisjoint(labels)

                matches = [message for message in matches if wanted(message)]
                total = sum(1 for message in self._order[start:stop] if wanted(message))
        return matches, total

    def history(
        self,
        start_history_id: int,
        history_types: Iterable[str] | None = None,
        label_id: str | None = None,
    ) -> list[HistoryRecord]:
        """Records after `start_history_id`, oldest first, of the given types (any when None) and
        touching `label_id` (any when None). Raises KeyError if `start_history_id` is expired."""
        types = set(history_types) if history_types else None
        with self._lock:
            records = self._history.since(start_history_id)
        if types is not None:
            records = [record for record in records if record.types & types]
        if label_id is not None:
            records = [record for record in records if record.touches_label(label_id)]
        return records

    def history_since(self, start_history_id: int) -> list[StoredMessage]:
        """Messages added after `start_history_id`, oldest first (as added). KeyError if expired."""
        return [record.message for record in self.history(start_history_id) if record.added]

    def expire_history_before(self, history_id: int) -> None:
        """Simulate Gmail dropping old history: startHistoryId < history_id now answers 404. Forks keep
        as many of their newest records as this mailbox does."""
        with self._lock:
            self._history.expire_before(history_id)
            kept = self._history_id - history_id
            followers = list(self._followers)
        for follower in followers:
            follower.expire_history_before(follower.history_id - kept)

    def set_history_retention(self, records: int | None) -> None:
        """Keep only the last `records` history records (None = keep everything)."""
        with self._lock:
            self._history.retention = records
            if records is not None:
                self._history.expire_before(self._history_id - records)


def _order_key(message: StoredMessage) -> tuple[int, int]:
    return (-message.internal_date_ms, -message.sequence)


def _batch_ids(message_ids: Iterable[str]) -> list[str]:
    ids = list(dict.fromkeys(message_ids))
    if len(ids) > MAX_IDS_PER_BATCH:
        raise ValueError(f"Too many ids: {len(ids)} (at most {MAX_IDS_PER_BATCH} per request)")
    return ids


def _message_id_for(raw: bytes, index: int) -> str:
    """16 lowercase hex chars, like Gmail's ids; stable for the same bytes at the same position."""
    return hashlib.sha256(index.to_bytes(8, "big") + raw).hexdigest()[:16]
