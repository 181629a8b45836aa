"""Client-side pacing of Gmail quota units: a thread-safe token bucket, shared per user in a process.

Gmail meters each user with a bucket of quota units that refills continuously. Spending our units at
just below that rate keeps the server's bucket from running dry, so we use the quota fully without
collecting 429s. One bucket per (endpoint, user token) is shared by every `GmailClient` in the
process, because the quota belongs to the user, not to a client object.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable

from emailsync.gmail import settings as gmail_settings

Clock = Callable[[], float]
Sleep = Callable[[float], None]


class TokenBucket:
    """Units refill at `rate` per second up to `capacity`; `acquire` may go into debt and then waits.

    Debt keeps callers in arrival order: each one reserves its units at once and sleeps until the
    bucket has earned them back, so concurrent callers never overshoot the rate together.
    """

    def __init__(
        self,
        rate: float,
        capacity: float,
        *,
        initial: float | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = time.sleep,
    ) -> None:
        if rate <= 0 or capacity <= 0:
            raise ValueError("rate and capacity must be positive")
        self.rate = rate
        self.capacity = capacity
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tokens = capacity if initial is None else min(initial, capacity)
        self._updated = clock()
        self._paused_until = 0.0

    def _refill(self, now: float) -> None:
        if now > self._updated:
            self._tokens = min(self.capacity, self._tokens + (now - self._updated) * self.rate)
            self._updated = now

    def reserve(self, units: float) -> float:
        """Take `units` now and return how long the caller must wait before using them."""
        with self._lock:
            now = self._clock()
            self._refill(now)
            self._tokens -= units
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
            return max(wait, self._paused_until - now, 0.0)

    def acquire(self, units: float) -> float:
        """Block until `units` may be spent; returns the seconds waited."""
        wait = self.reserve(units)
        if wait > 0:
            self._sleep(wait)
        return wait

    def pause(self, seconds: float) -> None:
        """The server said its bucket is empty (429): spend nothing for `seconds`, then start from empty."""
        with self._lock:
            now = self._clock()
            self._refill(now)
            self._tokens = min(self._tokens, 0.0)
            self._paused_until = max(self._paused_until, now + max(seconds, 0.0))

    @property
    def available(self) -> float:
        with self._lock:
            self._refill(self._clock())
            return self._tokens


_shared_buckets: dict[tuple[str, str, float], TokenBucket] = {}
_shared_lock = threading.Lock()


def shared_bucket(endpoint: str, token: str, quota_units_per_second: float) -> TokenBucket:
    """The process-wide bucket for one user's quota at one endpoint (the token is only hashed, never kept)."""
    user_key = hashlib.sha256(token.encode("utf-8")).hexdigest()[:32]
    key = (endpoint, user_key, quota_units_per_second)
    with _shared_lock:
        bucket = _shared_buckets.get(key)
        if bucket is None:
            capacity = quota_units_per_second * gmail_settings.PACING_BURST_SECONDS
            bucket = TokenBucket(
                rate=quota_units_per_second * gmail_settings.PACING_RATE_FRACTION,
                capacity=capacity,
                initial=capacity * gmail_settings.PACING_INITIAL_FILL,
            )
            _shared_buckets[key] = bucket
        return bucket
