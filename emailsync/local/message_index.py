"""The messages of one mailbox, by id and newest first: what `messages.list` pages through.

Not thread-safe: the owning `Mailbox` locks. Messages are immutable; a label change replaces one."""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Iterable

from emailsync.local.stored_message import StoredMessage


def _order_key(message: StoredMessage) -> tuple[int, int]:
    return (-message.internal_date_ms, -message.sequence)  # unique: sequences are


class MessageIndex:
    def __init__(self) -> None:
        self.by_id: dict[str, StoredMessage] = {}
        self._order: list[StoredMessage] = []  # newest first
        self._keys: list[tuple[int, int]] = []
        self._thread_sizes: Counter[str] = Counter()
        self._label_sizes: Counter[str] = Counter()  # messages per label: skips filters nothing can match

    def copy(self) -> MessageIndex:
        clone = MessageIndex()
        clone.by_id = dict(self.by_id)
        clone._order = list(self._order)
        clone._keys = list(self._keys)
        clone._thread_sizes = Counter(self._thread_sizes)
        clone._label_sizes = Counter(self._label_sizes)
        return clone

    def __len__(self) -> int:
        return len(self.by_id)

    @property
    def thread_count(self) -> int:
        return len(self._thread_sizes)

    def newest_first(self) -> list[StoredMessage]:
        return list(self._order)

    def add(self, message: StoredMessage) -> None:
        key = _order_key(message)
        position = bisect.bisect_left(self._keys, key)
        self._keys.insert(position, key)
        self._order.insert(position, message)
        self.by_id[message.id] = message
        self._thread_sizes[message.thread_id] += 1
        self._label_sizes.update(message.label_ids)

    def replace(self, message: StoredMessage) -> None:
        """Put `message` in the place of the message with its id (same date and sequence)."""
        self._order[bisect.bisect_left(self._keys, _order_key(message))] = message
        self._label_sizes.subtract(self.by_id[message.id].label_ids)
        self._label_sizes.update(message.label_ids)
        self.by_id[message.id] = message

    def remove(self, message: StoredMessage) -> None:
        position = bisect.bisect_left(self._keys, _order_key(message))
        del self._order[position]
        del self._keys[position]
        del self.by_id[message.id]
        self._thread_sizes[message.thread_id] -= 1
        if self._thread_sizes[message.thread_id] <= 0:
            del self._thread_sizes[message.thread_id]
        self._label_sizes.subtract(message.label_ids)

    def search(
        self,
        after_ms: int | None,
        before_ms: int | None,
        label_ids: Iterable[str],
        cursor: tuple[int, int] | None,
        excluded_label_ids: Iterable[str],
    ) -> tuple[list[StoredMessage], int]:
        """See `Mailbox.search`."""
        required = set(label_ids)
        excluded = {label for label in excluded_label_ids if self._label_sizes[label] > 0}
        if any(self._label_sizes[label] <= 0 for label in required):
            return [], 0
        keys = self._keys
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

    def label_counts(self, label_id: str) -> dict[str, int]:
        """messagesTotal, messagesUnread, threadsTotal, threadsUnread of one label (labels.get)."""
        tagged = [message for message in self._order if label_id in message.label_ids]
        unread = [message for message in tagged if "UNREAD" in message.label_ids]
        return {
            "messagesTotal": len(tagged),
            "messagesUnread": len(unread),
            "threadsTotal": len({message.thread_id for message in tagged}),
            "threadsUnread": len({message.thread_id for message in unread}),
        }
