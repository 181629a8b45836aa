"""The domain's log lines (`emailsync.*`: Gmail retries, skipped messages, lease warnings) in the logs of
the flow run they belong to, so the Prefect UI shows them beside Prefect's own.

`route_domain_logs_to_prefect()` (called when the flows are imported) gives the `emailsync` logger
Prefect's `APILogHandler` for records made inside a flow or task run. For that, `emailsync` logs at INFO
(or lower, when the root already does) instead of inheriting the root's WARNING, so its INFO lines also
propagate to console handlers: a console that wants fewer lines sets its handler's level. Records made
outside a run (the watcher, background threads) go to the console only.
"""

from __future__ import annotations

import logging

from prefect.context import FlowRunContext, TaskRunContext
from prefect.logging.handlers import APILogHandler

DOMAIN_LOGGER = "emailsync"


class _InsideRun(logging.Filter):
    """Only records the API can file under a run: Prefect drops (and warns about) the others."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "flow_run_id", None):
            return True
        return FlowRunContext.get() is not None or TaskRunContext.get() is not None


def route_domain_logs_to_prefect(level: int = logging.INFO) -> None:
    """Idempotent. An `emailsync` level set explicitly (e.g. DEBUG with --verbose) is kept."""
    logger = logging.getLogger(DOMAIN_LOGGER)
    if any(isinstance(handler, APILogHandler) for handler in logger.handlers):
        return
    api = APILogHandler(level=level)
    api.addFilter(_InsideRun())
    logger.addHandler(api)
    if logger.level == logging.NOTSET:
        logger.setLevel(min(level, logging.getLogger().getEffectiveLevel()))
