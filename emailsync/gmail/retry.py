"""The Gmail client's one retry path, for single calls and for the parts of batches.

`GmailRetrier.run` has the shape of Singer SDK's `RESTStream.request_decorator`: one attempt at a time,
a wait between attempts (Retry-After honoured, else the policy's delay with jitter), and a final error
once the policy's attempts are spent. A 429 pauses the user's shared `TokenBucket`, so every client of
that user waits, not only the one that was refused.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable

from emailsync.errors import EmailSyncError, RetriableError
from emailsync.gmail.http_errors import is_rate_limit
from emailsync.gmail.pacing import Sleep, TokenBucket
from emailsync.gmail.settings import RetryPolicy
from emailsync.gmail.types import ClientStats

logger = logging.getLogger(__name__)


class GmailRetrier:
    """Retries, backoff and their accounting in `ClientStats` for one `GmailClient`."""

    def __init__(self, policy: RetryPolicy, bucket: TokenBucket, stats: ClientStats, sleep: Sleep) -> None:
        self._policy = policy
        self._bucket = bucket
        self._stats = stats
        self._sleep_fn = sleep

    def run(
        self,
        attempt_once: Callable[[int], list[EmailSyncError]],
        exhausted: Callable[[int, list[EmailSyncError]], EmailSyncError],
    ) -> None:
        """`attempt_once(attempt)` makes one attempt and returns the retriable failures it left (fatal ones
        it raises); between attempts `_backoff` waits (Retry-After honoured); after the policy's last
        attempt `exhausted(attempt, errors)` is raised."""
        attempt = 1
        while True:
            errors = attempt_once(attempt)
            if not errors:
                return
            if attempt >= self._policy.max_attempts:
                raise exhausted(attempt, errors)
            self._backoff(attempt, errors)
            self._stats.retries += len(errors)
            attempt += 1

    def count_failure(self, error: EmailSyncError) -> None:
        if is_rate_limit(error):
            self._stats.rate_limited += 1
        else:
            self._stats.server_errors += 1

    def pause_for_rate_limit(self, attempt: int, errors: list[EmailSyncError]) -> None:
        """The server's bucket is empty: every client of this user waits, then restarts from empty."""
        self._bucket.pause(self._retry_delay(attempt, errors))

    def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            self._stats.backoff_seconds += seconds
            self._sleep_fn(seconds)

    def _retry_delay(self, attempt: int, errors: list[EmailSyncError]) -> float:
        """Retry-After when the server gave one, else the policy's delay with jitter."""
        hinted = [
            e.retry_after for e in errors if isinstance(e, RetriableError) and e.retry_after is not None
        ]
        if hinted:
            return min(max(hinted), self._policy.max_retry_after_seconds)
        base = self._policy.delay(attempt)
        return base * (1 + random.uniform(0, self._policy.jitter_fraction))

    def _backoff(self, attempt: int, errors: list[EmailSyncError]) -> None:
        """Wait before retry `attempt`: what is left of a 429 pause, and the policy delay for other errors."""
        delay = 0.0
        if any(is_rate_limit(e) for e in errors):
            delay = self._bucket.reserve(0)  # the pause was set (Retry-After) when the 429 arrived
        others = [e for e in errors if not is_rate_limit(e)]
        if others:
            delay = max(delay, self._retry_delay(attempt, others))
        logger.info("gmail retry %d in %.2fs (%d failing, e.g. %s)", attempt, delay, len(errors), errors[0])
        self._sleep(delay)
