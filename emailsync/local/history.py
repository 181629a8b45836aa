"""The history of one user's mailbox: one record per change, as Gmail's `history.list` reports them.

Every change (a message added, deleted, or labels added/removed on it) gets the next history id, so
ids are contiguous here (Gmail only promises that they increase). Retention keeps the newest records;
a `startHistoryId` older than the oldest retained one is expired (Gmail answers 404)."""

from __future__ import annotations

import bisect
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from emailsync.local.stored_message import StoredMessage

MESSAGE_ADDED = "messageAdded"
MESSAGE_DELETED = "messageDeleted"
LABEL_ADDED = "labelAdded"
LABEL_REMOVED = "labelRemoved"
HISTORY_TYPES = (MESSAGE_ADDED, MESSAGE_DELETED, LABEL_ADDED, LABEL_REMOVED)
ChangeListener = Callable[[int], None]
_log = logging.getLogger(__name__)


def message_summary(message: StoredMessage) -> dict[str, Any]:
    """{id, threadId, labelIds}: a message as history records and label changes show it (no labelIds
    field when it has no label, as Gmail leaves empty lists out)."""
    summary: dict[str, Any] = {"id": message.id, "threadId": message.thread_id}
    if message.label_ids:
        summary["labelIds"] = list(message.label_ids)
    return summary


@dataclass(frozen=True, slots=True)
class HistoryRecord:
    """One change. `message` is the message as it was right after the change (labels included)."""

    history_id: int
    message: StoredMessage
    added: bool = False
    deleted: bool = False
    labels_added: tuple[str, ...] = ()
    labels_removed: tuple[str, ...] = ()

    @property
    def types(self) -> set[str]:
        types: set[str] = set()
        if self.added:
            types.add(MESSAGE_ADDED)
        if self.deleted:
            types.add(MESSAGE_DELETED)
        if self.labels_added:
            types.add(LABEL_ADDED)
        if self.labels_removed:
            types.add(LABEL_REMOVED)
        return types

    def touches_label(self, label_id: str) -> bool:
        """For `history.list?labelId=`: the message carries the label, or the change is about it."""
        return (
            label_id in self.message.label_ids
            or label_id in self.labels_added
            or label_id in self.labels_removed
        )

    def resource(self, history_types: frozenset[str] | None = None) -> dict[str, Any]:
        """The History resource; with `history_types`, only those typed lists."""
        message = self.message
        ref = message_summary(message)
        record: dict[str, Any] = {
            "id": str(self.history_id),
            "messages": [{"id": message.id, "threadId": message.thread_id}],
        }
        wanted = history_types or frozenset(HISTORY_TYPES)
        if self.added and MESSAGE_ADDED in wanted:
            record["messagesAdded"] = [{"message": dict(ref)}]
        if self.deleted and MESSAGE_DELETED in wanted:
            record["messagesDeleted"] = [{"message": dict(ref)}]
        if self.labels_added and LABEL_ADDED in wanted:
            record["labelsAdded"] = [{"message": dict(ref), "labelIds": list(self.labels_added)}]
        if self.labels_removed and LABEL_REMOVED in wanted:
            record["labelsRemoved"] = [{"message": dict(ref), "labelIds": list(self.labels_removed)}]
        return record


class HistoryLog:
    """Records in ascending history id. Not thread-safe: the owning mailbox locks."""

    def __init__(self, oldest_retained: int) -> None:
        self._records: list[HistoryRecord] = []
        self._ids: list[int] = []
        self.oldest_retained = oldest_retained  # a startHistoryId below this is expired
        self.retention: int | None = None

    def copy(self) -> HistoryLog:
        clone = HistoryLog(self.oldest_retained)
        clone._records = list(self._records)
        clone._ids = list(self._ids)
        clone.retention = self.retention
        return clone

    def append(self, record: HistoryRecord) -> None:
        self._records.append(record)
        self._ids.append(record.history_id)
        if self.retention is not None:
            self.expire_before(record.history_id - self.retention)

    def expire_before(self, history_id: int) -> None:
        """Drop records older than `history_id`; a startHistoryId below it is then expired."""
        self.oldest_retained = max(self.oldest_retained, history_id)
        # keep the record *at* oldest_retained - 1 out too: history.list(start) lists ids > start
        cut = bisect.bisect_right(self._ids, self.oldest_retained)
        if cut > 1024 and cut > len(self._ids) // 2:  # trim in chunks: list slicing is O(n)
            del self._records[:cut]
            del self._ids[:cut]

    def since(self, start_history_id: int) -> list[HistoryRecord]:
        """Records with id > start, oldest first. KeyError when `start_history_id` is expired."""
        if start_history_id < self.oldest_retained:
            raise KeyError(start_history_id)
        return self._records[bisect.bisect_right(self._ids, start_history_id) :]


class ChangeListeners:
    """Callbacks told the new historyId after each change of a mailbox. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._listeners: list[ChangeListener] = []

    def add(self, listener: ChangeListener) -> None:
        with self._lock:
            self._listeners.append(listener)

    def remove(self, listener: ChangeListener) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def notify(self, history_id: int) -> None:
        """Call every listener (the caller holds no mailbox lock); one that raises is logged only."""
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(history_id)
            except Exception:
                _log.exception("mailbox change listener failed")
