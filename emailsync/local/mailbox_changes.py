"""The changes a user makes to a local Gmail mailbox besides deliveries: label changes
(`messages.modify`, `batchModify`, `trash`, `untrash`) and deletions (`messages.delete`, `batchDelete`).

Each change that does something writes one history record with the next historyId, under the
mailbox's lock; the change listeners hear once per call, with the newest historyId, outside the lock.
`Mailbox` (`mailbox.py`) holds the state these methods change.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from emailsync.local.history import ChangeListeners, HistoryLog, HistoryRecord
from emailsync.local.labels import TRASH, Labels, apply_label_change
from emailsync.local.message_index import MessageIndex
from emailsync.local.stored_message import StoredMessage

MAX_IDS_PER_BATCH = 1000  # batchModify / batchDelete, as Gmail's


class MailboxChanges:
    """Label changes and deletions of a `Mailbox`."""

    labels: Labels
    _lock: threading.RLock
    _messages: MessageIndex
    _history: HistoryLog
    _history_id: int
    _listeners: ChangeListeners

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


def _batch_ids(message_ids: Iterable[str]) -> list[str]:
    ids = list(dict.fromkeys(message_ids))
    if len(ids) > MAX_IDS_PER_BATCH:
        raise ValueError(f"Too many ids: {len(ids)} (at most {MAX_IDS_PER_BATCH} per request)")
    return ids
