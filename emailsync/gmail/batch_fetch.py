"""Messages (format=raw) fetched in paced, adaptive batch requests, the way `GmailClient.get_messages`
downloads a sync's batch.

Each batch request is paced for all its parts at once; parts answered 429/5xx go through the one retry
path (`GmailRetrier.run`) with the parts that failed alongside them; 404 parts (deleted since they were
listed) are skipped. The batch size halves after a batch with 429s and grows back after clean ones,
never beyond what the user's pacing bucket holds at once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from googleapiclient.http import BatchHttpRequest

from emailsync.errors import EmailSyncError, RetriableError
from emailsync.gmail import settings as gmail_settings
from emailsync.gmail.connection import GmailConnection, raise_unless_retriable
from emailsync.gmail.http_errors import is_not_found, is_rate_limit
from emailsync.gmail.types import GmailMessage

logger = logging.getLogger(__name__)


@dataclass
class _BatchOutcome:
    fetched: dict[str, GmailMessage] = field(default_factory=dict)
    failed: dict[str, EmailSyncError] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)


class MessageBatchFetcher:
    """Downloads messages by id in batch requests over one `GmailConnection`, adapting the batch size."""

    def __init__(self, connection: GmailConnection) -> None:
        self._connection = connection
        # A batch must fit in the bucket's burst: the server's own bucket holds about one second of units,
        # and a batch bigger than that is partly refused however well it is paced.
        fits = int(connection.bucket.capacity // max(connection.costs.messages_get, 1))
        self._max_batch = max(gmail_settings.MIN_BATCH_SIZE, min(gmail_settings.MAX_BATCH_SIZE, fits))
        self.batch_size = min(gmail_settings.INITIAL_BATCH_SIZE, self._max_batch)

    def fetch(self, ids: list[str]) -> list[GmailMessage]:
        """The messages of `ids` that exist, in the order of `ids`; `RetriableError` for parts still
        failing after the last attempt."""
        unique = list(dict.fromkeys(ids))
        fetched: dict[str, GmailMessage] = {}
        pending = unique

        def attempt_pending(attempt: int) -> list[EmailSyncError]:
            nonlocal pending
            failed: dict[str, EmailSyncError] = {}
            start = 0
            while start < len(pending):
                chunk = pending[start : start + self.batch_size]
                start += len(chunk)
                outcome = self._fetch_batch(chunk)
                fetched.update(outcome.fetched)
                failed.update(outcome.failed)
            pending = [message_id for message_id in pending if message_id in failed]
            return list(failed.values())

        def exhausted(attempt: int, errors: list[EmailSyncError]) -> EmailSyncError:
            first = errors[0]
            return RetriableError(
                f"{len(errors)} of {len(unique)} messages failing after {attempt} attempts: {first}",
                retry_after=getattr(first, "retry_after", None),
                status=getattr(first, "status", None),
            )

        self._connection.retrier.run(attempt_pending, exhausted)
        return [fetched[message_id] for message_id in ids if message_id in fetched]

    def _fetch_batch(self, chunk: list[str]) -> _BatchOutcome:
        connection = self._connection
        outcome = _BatchOutcome()

        def on_part(request_id: str, response: Any, exception: BaseException | None) -> None:
            if exception is None:
                try:
                    outcome.fetched[request_id] = GmailMessage.from_api(response)
                except (KeyError, ValueError, TypeError) as exc:
                    outcome.failed[request_id] = RetriableError(
                        f"messages.get {request_id}: bad answer ({exc})"
                    )
                return
            if is_not_found(exception):
                outcome.missing.append(request_id)
                return
            outcome.failed[request_id] = connection.classify(exception, f"messages.get {request_id}")

        connection.pace(connection.costs.messages_get * len(chunk))
        # Built directly: the service's new_batch_http_request() ignores api_endpoint and takes no batch_uri.
        batch = BatchHttpRequest(callback=on_part, batch_uri=connection.batch_uri)
        for message_id in chunk:
            batch.add(
                connection.messages.get(userId="me", id=message_id, format="raw"), request_id=message_id
            )
        connection.stats.http_requests += 1
        connection.stats.calls += len(chunk)
        try:
            batch.execute(http=connection.http())
        except Exception as exc:  # the batch request as a whole failed: every part not answered fails with it
            error = connection.classify(exc, "batch messages.get")
            raise_unless_retriable(error, exc)
            for message_id in chunk:
                if message_id not in outcome.fetched and message_id not in outcome.missing:
                    outcome.failed[message_id] = error

        for error in outcome.failed.values():
            if not isinstance(error, RetriableError):
                raise error
        for error in outcome.failed.values():
            connection.retrier.count_failure(error)
        rate_limited = [e for e in outcome.failed.values() if is_rate_limit(e)]
        if rate_limited:
            connection.retrier.pause_for_rate_limit(1, rate_limited)
        if outcome.missing:
            connection.stats.not_found += len(outcome.missing)
            logger.warning(
                "skipping %d messages that no longer exist: %s", len(outcome.missing), outcome.missing
            )
        self._adapt_batch_size(bool(rate_limited))
        return outcome

    def _adapt_batch_size(self, rate_limited: bool) -> None:
        if rate_limited:
            self.batch_size = max(gmail_settings.MIN_BATCH_SIZE, self.batch_size // 2)
        else:
            self.batch_size = min(self._max_batch, self.batch_size + gmail_settings.BATCH_GROWTH_STEP)
