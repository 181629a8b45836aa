"""The mailbox of one user of the local Gmail API server: mbox entries as Gmail messages.

Each mbox entry becomes one message whose `raw` is the entry's bytes exactly as stored (minus the
`From ` separator line), so what the client downloads is what the corpus holds. Everything Gmail adds
on top (id, threadId, internalDate, labelIds, snippet, historyId) is derived here, deterministically:
the same mbox always yields the same ids. Labels come from Takeout's `X-Gmail-Labels` header, else
INBOX + UNREAD (mail as delivered).

Changes (deliveries, inserts, label changes, trash, delete) each write one history record
(`emailsync/local/history.py`) and then call the change listeners with the new historyId. Building,
forks, deliveries, listeners and history retention are here; label changes and deletions in
`mailbox_changes.py` (`MailboxChanges`), the reads in `mailbox_reads.py` (`MailboxReads`).

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
from emailsync.local.labels import Label, LabelOptions, Labels
from emailsync.local.mailbox_changes import MailboxChanges
from emailsync.local.mailbox_reads import MailboxReads
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


class Mailbox(MailboxChanges, MailboxReads):
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

    # ------------------------------------------------------------------------------------- labels
    def create_label(self, name: str, **options: Unpack[LabelOptions]) -> Label:
        """`labels.create` (see `Labels.create`); ValueError for a bad request, LabelConflict for a
        name in use."""
        with self._lock:
            return self.labels.create(name, **options)

    # ---------------------------------------------------------------------------------- listeners
    def add_change_listener(self, listener: ChangeListener) -> None:
        """Call `listener(history_id)` after every change (outside the lock, on the changing thread).
        A listener that raises is logged and does not fail the change."""
        self._listeners.add(listener)

    def remove_change_listener(self, listener: ChangeListener) -> None:
        self._listeners.remove(listener)

    # ---------------------------------------------------------------------------------- retention
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


def _message_id_for(raw: bytes, index: int) -> str:
    """16 lowercase hex chars, like Gmail's ids; stable for the same bytes at the same position."""
    return hashlib.sha256(index.to_bytes(8, "big") + raw).hexdigest()[:16]
