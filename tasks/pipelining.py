"""`fetch_ahead`: the batches of a plan, each fetched while the one before it is being stored.

Batch N+1's fetch task is submitted as soon as batch N is downloaded (its listing says where the walk
goes on), before N is handed to the caller: the quota-bound download overlaps the CPU-bound enrichment.
The time Prefect spends around the domain calls is measured here (`SyncTimings.orchestration_seconds`,
which the sync benchmark reports), so the flow itself carries no instrumentation.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

from prefect import Task
from prefect.futures import PrefectFuture

from emailsync.sync.batch import Batch
from emailsync.sync.plan import BatchRequest, SyncPlan
from emailsync.sync.run import SyncRun


def fetch_ahead(fetch: Task[[SyncRun, BatchRequest], Batch], run: SyncRun, plan: SyncPlan) -> Iterator[Batch]:
    """Yield the plan's fetched batches in order, one fetch always in flight while the caller works."""
    timer = OrchestrationTimer()

    def submit(request: BatchRequest | None) -> PrefectFuture[Batch] | None:
        return timer.submit(fetch, run, request) if request is not None else None

    pending = submit(plan.first_request())
    try:
        while pending is not None:
            batch = pending.result()
            timer.fetched(batch.fetch_seconds)
            pending = submit(plan.request_after(batch))
            handed_over = time.perf_counter()
            yield batch
            # what the caller spent beyond the batch's own domain time is task-run overhead
            timer.add(time.perf_counter() - handed_over - run.last_batch_seconds)
            run.view.show(run.percent)
    finally:
        run.summary.timings.orchestration_seconds += timer.overhead_seconds


class OrchestrationTimer:
    """Time Prefect spends around the domain calls: task-run wall time minus the time inside them."""

    def __init__(self) -> None:
        self.overhead_seconds = 0.0
        self._submitted_at: float | None = None
        self._done_at: float | None = None
        self._lock = threading.Lock()

    def submit(self, task: Any, *args: Any, **kwargs: Any) -> PrefectFuture[Any]:
        self._submitted_at, self._done_at = time.perf_counter(), None
        future = task.submit(*args, **kwargs)
        future.add_done_callback(self._on_done)
        return future

    def _on_done(self, _future: Any) -> None:
        with self._lock:
            self._done_at = time.perf_counter()

    def fetched(self, domain_seconds: float) -> None:
        with self._lock:
            done_at = self._done_at or time.perf_counter()
        if self._submitted_at is not None:
            self.overhead_seconds += max(0.0, done_at - self._submitted_at - domain_seconds)

    def add(self, overhead_seconds: float) -> None:
        self.overhead_seconds += max(0.0, overhead_seconds)
