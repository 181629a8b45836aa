"""What the local Gmail server has seen: `ServerStats` and the thread-safe counters behind it."""

from __future__ import annotations

import threading
from collections import Counter

from pydantic import BaseModel

STATS_PATH = "/_stats"  # GET: ServerStats as JSON (admin, for out-of-process callers)


class ServerStats(BaseModel):
    """A snapshot of what the server has seen since start (or the last `reset_stats()`)."""

    http_requests: int = 0
    batch_requests: int = 0
    batch_parts: int = 0
    requests_by_method: dict[str, int] = {}  # API calls, batch parts included
    responses_by_status: dict[int, int] = {}  # API call outcomes, batch parts included
    rate_limited: int = 0  # 429s from the quota (injected 429s count under errors_injected)
    errors_injected: int = 0
    quota_units: int = 0  # units charged for calls that were served
    token_refreshes: int = 0  # access tokens issued by POST /token


class StatsCounters:
    """The counters of one server, counted from its request threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stats = ServerStats()
        self._method_counter: Counter[str] = Counter()
        self._status_counter: Counter[int] = Counter()

    def snapshot(self) -> ServerStats:
        with self._lock:
            return self._stats.model_copy(
                update={
                    "requests_by_method": dict(self._method_counter),
                    "responses_by_status": dict(self._status_counter),
                }
            )

    def reset(self) -> None:
        with self._lock:
            self._stats = ServerStats()
            self._method_counter.clear()
            self._status_counter.clear()

    def count_http_request(self) -> None:
        with self._lock:
            self._stats.http_requests += 1

    def count_token_refresh(self) -> None:
        with self._lock:
            self._stats.token_refreshes += 1

    def count_batch_request(self) -> None:
        with self._lock:
            self._stats.batch_requests += 1
            self._method_counter["batch"] += 1

    def count_batch_part(self) -> None:
        with self._lock:
            self._stats.batch_parts += 1

    def count_quota_units(self, units: int) -> None:
        with self._lock:
            self._stats.quota_units += units

    def record(
        self, api_method: str | None, status: int, *, rate_limited: bool = False, injected: bool = False
    ) -> None:
        """One API call's outcome (`api_method` None: an unknown route)."""
        with self._lock:
            if api_method is not None:
                self._method_counter[api_method] += 1
            self._status_counter[status] += 1
            if rate_limited:
                self._stats.rate_limited += 1
            if injected:
                self._stats.errors_injected += 1
