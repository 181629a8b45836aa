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

import email.message
import hashlib
import threading
import time
import weakref
from collections.abc import Iterable
from datetime import UTC, datetime
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import Unpack

from emailsync.local.history import ChangeListener, ChangeListeners, HistoryLog, HistoryRecord
from emailsync.local.labels import TRASH, Label, LabelOptions, Labels, apply_label_change
from emailsync.local.mbox_reading import dated_entries, read_mbox
from emailsync.local.message_index import MessageIndex
from emailsync.local.stored_message import (
    DEFAULT_LABEL_IDS,
    MessageContent,
    StoredMessage,
    decode_header_value,
)
from emailsync.local.threads import Threads

__all__ = ["DEFAULT_EMAIL_ADDRESS", "INITIAL_HISTORY_ID", "Mailbox", "read_mbox"]

DEFAULT_EMAIL_ADDRESS = "me@example.com"
# Gmail history ids are large opaque integers; starting above 0 keeps clients from relying on small values.
INITIAL_HISTORY_ID = 100_000
MAX_IDS_PER_BATCH = 1000  # batchModify / batchDelete, as Gmail's


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
        self._messages = MessageIndex()
        self._history = HistoryLog(INITIAL_HISTORY_ID)
        self._history_id = INITIAL_HISTORY_ID
        self._threads = Threads()
        self._sequence = 0
        self.date_shift_ms = 0
        self._listeners = ChangeListeners()
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
            clone._messages = self._messages.copy()
            clone._history = self._history.copy()
            clone._history_id = self._history_id
            clone._threads = self._threads.copy()
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

    def _insert(
        self,
        content: MessageContent,
        headers: email.message.Message,
        internal_date_ms: int,
        message_id: str,
        sequence: int,
        label_ids: tuple[str, ...],
    ) -> StoredMessage:
        thread_id = self._threads.thread_for(headers, message_id)
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
        self._messages.add(message)
        self._threads.remember(headers, thread_id)
        self._history.append(HistoryRecord(self._history_id, message, added=True))
        return message

    def _new_id(self, raw: bytes) -> tuple[str, int]:
        """A fresh (id, sequence): the same bytes delivered twice are two Gmail messages."""
        sequence = self._sequence
        self._sequence += 1
        message_id = _message_id_for(raw, sequence)
        while message_id in self._messages.by_id:
            sequence = self._sequence
            self._sequence += 1
            message_id = _message_id_for(raw, sequence)
        return message_id, sequence

    def add_message(
        self, raw: bytes, internal_date_ms: int | None = None, label_ids: Iterable[str] | None = None
    ) -> str:
        """Deliver a new message (internalDate defaults to now, labels to INBOX + UNREAD) with the next
        historyId, here and in every fork of this mailbox; returns its id."""
        labels = tuple(label_ids) if label_ids is not None else DEFAULT_LABEL_IDS
        message, headers = self._add_new(raw, labels, internal_date_ms)
        with self._lock:
            followers = list(self._followers)
        for follower in followers:
            follower._deliver(message, headers)
        return message.id

    def _deliver(self, message: StoredMessage, headers: email.message.Message) -> None:
        """A delivery to the mailbox this one was forked from (same id unless it is taken here)."""
        with self._lock:
            labels = tuple(label for label in message.label_ids if label in self.labels)
            if message.sequence >= self._sequence and message.id not in self._messages.by_id:
                message_id, sequence = message.id, message.sequence
                self._sequence = sequence + 1
            else:  # this user has inserted messages of its own since the fork
                message_id, sequence = self._new_id(message.raw)
            self._insert(message.content, headers, message.internal_date_ms, message_id, sequence, labels)
            history_id = self._history_id
            followers = list(self._followers)
        self._listeners.notify(history_id)
        for follower in followers:
            follower._deliver(message, headers)

    def insert_message(
        self, raw: bytes, label_ids: Iterable[str] = (), internal_date_ms: int | None = None
    ) -> StoredMessage:
        """`messages.insert`: this user's mailbox only, with exactly `label_ids` (like IMAP APPEND)."""
        return self._add_new(raw, tuple(dict.fromkeys(label_ids)), internal_date_ms)[0]

    def _add_new(
        self, raw: bytes, labels: tuple[str, ...], internal_date_ms: int | None
    ) -> tuple[StoredMessage, email.message.Message]:
        headers = BytesHeaderParser().parsebytes(raw)
        millis = internal_date_ms if internal_date_ms is not None else int(time.time() * 1000)
        with self._lock:
            self.labels.check(labels)
            message_id, sequence = self._new_id(raw)
            message = self._insert(MessageContent(raw), headers, millis, message_id, sequence, labels)
            history_id = self._history_id
        self._listeners.notify(history_id)
        return message, headers

    # ------------------------------------------------------------------------------ label changes
    def modify(self, message_id: str, add: Iterable[str] = (), remove: Iterable[str] = ()) -> StoredMessage:
        """`messages.modify`. KeyError for an unknown message, ValueError for an invalid label."""
        add, remove = tuple(add), tuple(remove)
        with self._lock:
            self.labels.check(add + remove, modifiable=True)
            message = self._messages.by_id[message_id]
            changed = self._change_labels(message, add, remove)
            history_id = self._history_id
        if changed is not message:
            self._listeners.notify(history_id)
        return changed

    def batch_modify(
        self, message_ids: Iterable[str], add: Iterable[str] = (), remove: Iterable[str] = ()
    ) -> None:
        """`messages.batchModify`: one history record per message changed; unknown ids are skipped."""
        ids, add, remove = _batch_ids(message_ids), tuple(add), tuple(remove)
        with self._lock:
            self.labels.check(add + remove, modifiable=True)
            before = self._history_id
            for message_id in ids:
                if (message := self._messages.by_id.get(message_id)) is not None:
                    self._change_labels(message, add, remove)
            history_id = self._history_id
        if history_id != before:
            self._listeners.notify(history_id)

    def trash(self, message_id: str) -> StoredMessage:
        """`messages.trash`: TRASH on (and SPAM off); the other labels stay for `untrash`."""
        return self.modify(message_id, add=(TRASH,))

    def untrash(self, message_id: str) -> StoredMessage:
        return self.modify(message_id, remove=(TRASH,))

    def _change_labels(
        self, message: StoredMessage, add: tuple[str, ...], remove: tuple[str, ...]
    ) -> StoredMessage:
        """Apply a label change (`apply_label_change`); one history record unless nothing changed."""
        labels, added, removed = apply_label_change(message.label_ids, add, remove)
        if not added and not removed:
            return message
        self._history_id += 1
        changed = message.with_labels(labels, self._history_id)
        self._messages.replace(changed)
        self._history.append(
            HistoryRecord(self._history_id, changed, labels_added=added, labels_removed=removed)
        )
        return changed

    # ----------------------------------------------------------------------------------- deletion
    def delete(self, message_id: str) -> None:
        """`messages.delete`: gone for good (a messageDeleted record). KeyError for an unknown id."""
        with self._lock:
            self._delete(self._messages.by_id[message_id])
            history_id = self._history_id
        self._listeners.notify(history_id)

    def batch_delete(self, message_ids: Iterable[str]) -> None:
        """`messages.batchDelete`: unknown ids are skipped."""
        ids = _batch_ids(message_ids)
        with self._lock:
            before = self._history_id
            for message_id in ids:
                if (message := self._messages.by_id.get(message_id)) is not None:
                    self._delete(message)
            history_id = self._history_id
        if history_id != before:
            self._listeners.notify(history_id)

    def _delete(self, message: StoredMessage) -> None:
        self._messages.remove(message)
        self._history_id += 1
        self._history.append(HistoryRecord(self._history_id, message, deleted=True))

    # ------------------------------------------------------------------------------------- labels
    def create_label(self, name: str, **options: Unpack[LabelOptions]) -> Label:
        """`labels.create` (see `Labels.create`); ValueError for a bad request, LabelConflict for a
        name in use."""
        with self._lock:
            return self.labels.create(name, **options)

    def label_list(self) -> list[Label]:
        with self._lock:
            return self.labels.all()

    def label_counts(self, label_id: str) -> dict[str, int]:
        """messagesTotal, messagesUnread, threadsTotal, threadsUnread of one label (labels.get)."""
        with self._lock:
            return self._messages.label_counts(label_id)

    # ---------------------------------------------------------------------------------- listeners
    def add_change_listener(self, listener: ChangeListener) -> None:
        """Call `listener(history_id)` after every change (outside the lock, on the changing thread).
        A listener that raises is logged and does not fail the change."""
        self._listeners.add(listener)

    def remove_change_listener(self, listener: ChangeListener) -> None:
        self._listeners.remove(listener)

    # ------------------------------------------------------------------------------------ queries
    def get(self, message_id: str) -> StoredMessage | None:
        return self._messages.by_id.get(message_id)

    def __len__(self) -> int:
        return len(self._messages)

    @property
    def history_id(self) -> int:
        """The current (latest) historyId of the mailbox."""
        return self._history_id

    @property
    def thread_count(self) -> int:
        return self._messages.thread_count

    @property
    def oldest_retained_history_id(self) -> int:
        return self._history.oldest_retained

    def newest_first(self) -> list[StoredMessage]:
        with self._lock:
            return self._messages.newest_first()

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
        with self._lock:
            return self._messages.search(after_ms, before_ms, label_ids, cursor, excluded_label_ids)

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


def _batch_ids(message_ids: Iterable[str]) -> list[str]:
    ids = list(dict.fromkeys(message_ids))
    if len(ids) > MAX_IDS_PER_BATCH:
        raise ValueError(f"Too many ids: {len(ids)} (at most {MAX_IDS_PER_BATCH} per request)")
    return ids


def _message_id_for(raw: bytes, index: int) -> str:
    """16 lowercase hex chars, like Gmail's ids; stable for the same bytes at the same position."""
    return hashlib.sha256(index.to_bytes(8, "big") + raw).hexdigest()[:16]
