"""Store a batch's emails on a background thread while its next emails are parsed and enriched.

Enrichment is CPU-bound (the model runs outside the GIL) and storing waits on Firestore, so the two
overlap well: the writes of chunk k run while chunk k+1 is enriched, and only the last chunk's write is
left on the batch's critical path. The batch still ends with every email stored (`wait()`), so the
checkpoint and progress that follow never get ahead of what is in Firestore.
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from emailsync.firestore.emails import EmailRepository
    from emailsync.models import EmailRecord


class BackgroundEmailWriter:
    """The email writes of one batch, in submission order, on one background thread.

    `submit(records)` hands a chunk over and returns at once; `wait()` blocks until every chunk is
    stored and returns how many emails were written, raising the first write's failure as is (so the
    one retriable/fatal classification still applies). A submit after a failed write raises that failure
    at once instead of enriching more emails for nothing. Leaving the `with` block always waits for the
    thread: no write outlives its batch, and on an error the writes not yet started are cancelled.
    """

    def __init__(self, emails: EmailRepository, provider_user_id: str) -> None:
        self._emails = emails
        self._provider_user_id = provider_user_id
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="email-writer")
        self._writes: list[Future[int]] = []
        self.busy_seconds = 0.0  # time spent writing (only the writer thread adds to it)

    def __enter__(self) -> BackgroundEmailWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._executor.shutdown(wait=True, cancel_futures=exc_type is not None)

    def submit(self, records: list[EmailRecord]) -> None:
        for write in self._writes:
            failure = write.exception() if write.done() else None
            if failure is not None:
                raise failure
        self._writes.append(self._executor.submit(self._write, records))

    def wait(self) -> int:
        """Block until every submitted chunk is stored; the number of emails written."""
        return sum(write.result() for write in self._writes)

    def _write(self, records: list[EmailRecord]) -> int:
        started = time.perf_counter()
        try:
            return self._emails.upsert_many(self._provider_user_id, records)
        finally:
            self.busy_seconds += time.perf_counter() - started
