"""What every email-sync task shares: the retry policy."""

from __future__ import annotations

from typing import Any

from prefect import Task
from prefect.client.schemas.objects import TaskRun
from prefect.states import State

from emailsync.errors import is_retriable

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
