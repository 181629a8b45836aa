"""Gmail's per-user quota: what each API method costs, and a token bucket per user."""

from __future__ import annotations

import time
from collections.abc import Callable

from emailsync.config import QuotaCosts


class QuotaExceeded(Exception):
    def __init__(self, retry_after_seconds: float) -> None:
        super().__init__(retry_after_seconds)
        self.retry_after_seconds = retry_after_seconds


class TokenBucket:
    """Per-user quota: `rate` units/s, capacity one second's worth. Not thread-safe (caller locks)."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.capacity = rate
        self.tokens = rate
        self._clock = clock
        self._updated = clock()

    def take(self, cost: float) -> None:
        """Charge `cost` units or raise QuotaExceeded with the wait until it would fit."""
        now = self._clock()
        self.tokens = min(self.capacity, self.tokens + (now - self._updated) * self.rate)
        self._updated = now
        # a cost above the capacity (tiny test quotas) may overdraw a full bucket instead of never fitting
        if cost <= self.tokens or self.tokens >= self.capacity:
            self.tokens -= cost
            return
        raise QuotaExceeded((min(cost, self.capacity) - self.tokens) / self.rate)


def method_costs(costs: QuotaCosts) -> dict[str, int]:
    """Quota units of each API method the server routes."""
    return {
        "messages.get": costs.messages_get,
        "messages.list": costs.messages_list,
        "history.list": costs.history_list,
        "getProfile": costs.get_profile,
        "messages.attachments.get": costs.messages_get,  # Gmail charges it like messages.get
        "messages.insert": costs.messages_insert,
        "messages.modify": costs.messages_modify,
        "messages.trash": costs.messages_trash,
        "messages.untrash": costs.messages_untrash,
        "messages.delete": costs.messages_delete,
        "messages.batchModify": costs.messages_batch_modify,
        "messages.batchDelete": costs.messages_batch_delete,
        "labels.list": costs.labels_list,
        "labels.get": costs.labels_get,
        "labels.create": costs.labels_create,
        "users.watch": costs.watch,
        "users.stop": costs.stop,
    }
