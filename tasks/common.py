"""What every email-sync task shares: the retry policy and the per-run resources handed to tasks."""

from __future__ import annotations

import threading
import uuid
from typing import Any

from prefect import Task
from prefect.client.schemas.objects import TaskRun
from prefect.states import State
from pydantic import BaseModel

from emailsync.errors import is_retriable
from emailsync.models import BackfillCursor, SyncWindow
from emailsync.sync.pipeline import FetchedBatch, SyncSession

TASK_RETRIES = 3
TASK_RETRY_DELAYS_SECONDS = [2, 5, 15]


def retry_only_retriable(task: Task[..., Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Prefect retries a failed task run only for errors `emailsync.errors.is_retriable` accepts."""
    try:
        state.result()
    except BaseException as exc:
        return is_retriable(exc)
    return False


RETRY_POLICY: dict[str, Any] = {
    "retries": TASK_RETRIES,
    "retry_delay_seconds": TASK_RETRY_DELAYS_SECONDS,
    "retry_condition_fn": retry_only_retriable,
}


class FetchedBatchRef(BaseModel):
    """A fetched batch as it travels through a Prefect future: a handle, not the messages.

    Prefect keeps every task result of a flow run in memory for dependency tracking; handing over the
    raw messages themselves would keep a whole mailbox alive until the flow run ends.
    """

    key: str
    emails_in_batch: int
    emails_fetched: int
    already_enriched: int
    window: SyncWindow | None = None
    cursor_after: BackfillCursor | None = None
    list_calls: int = 0
    fetch_seconds: float = 0.0


class SyncResources:
    """The session of one flow run plus the fetched batches waiting to be stored.

    A plain object on purpose: Prefect neither hashes it (tasks use NO_CACHE) nor walks into it.
    """

    def __init__(self, session: SyncSession) -> None:
        self.session = session
        self._parked: dict[str, FetchedBatch] = {}
        self._lock = threading.Lock()

    def park(self, fetched: FetchedBatch) -> FetchedBatchRef:
        key = uuid.uuid4().hex
        with self._lock:
            self._parked[key] = fetched
        return FetchedBatchRef(
            key=key,
            emails_in_batch=len(fetched.ids),
            emails_fetched=len(fetched.messages),
            already_enriched=fetched.already_enriched,
            window=fetched.window,
            cursor_after=fetched.cursor_after,
            list_calls=fetched.list_calls,
            fetch_seconds=fetched.fetch_seconds,
        )

    def parked(self, ref: FetchedBatchRef) -> FetchedBatch:
        with self._lock:
            return self._parked[ref.key]

    def release(self, ref: FetchedBatchRef) -> None:
        with self._lock:
            self._parked.pop(ref.key, None)

    def release_all(self) -> None:
        with self._lock:
            self._parked.clear()
