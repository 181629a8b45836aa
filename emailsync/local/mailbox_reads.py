"""What a local Gmail mailbox answers: messages (`messages.get`, the `messages.list` search), its
history (`history.list`, KeyError for an expired start), its labels and their counts, and the current
historyId. Reads that walk the index or the history take the mailbox's lock; `Mailbox` (`mailbox.py`)
holds the state.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from emailsync.local.history import HistoryLog, HistoryRecord
from emailsync.local.labels import Label, Labels
from emailsync.local.message_index import MessageIndex
from emailsync.local.stored_message import StoredMessage


class MailboxReads:
    """The reads of a `Mailbox`."""

    labels: Labels
    _lock: threading.RLock
    _messages: MessageIndex
    _history: HistoryLog
    _history_id: int

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

    def label_list(self) -> list[Label]:
        with self._lock:
            return self.labels.all()

    def label_counts(self, label_id: str) -> dict[str, int]:
        """messagesTotal, messagesUnread, threadsTotal, threadsUnread of one label (labels.get)."""
        with self._lock:
            return self._messages.label_counts(label_id)
