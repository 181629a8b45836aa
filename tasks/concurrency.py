"""Prefect's per-user concurrency limit `email-sync:{providerUserId}` (limit 1).

Prefect skips `concurrency()` with a warning when the limit does not exist, so it is created on first
use. The Firestore lease is the real guard: a sync enters here only once it holds the lease, so a slot
still occupied means its holder died (a killed process keeps its Prefect slot until the slot's lease
expires, at least a minute later). We wait for the slot no longer than a sync lease lasts, then go on
under the Firestore lease alone.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

logger = logging.getLogger(__name__)

# The Prefect API refuses slot leases shorter than a minute.
MIN_SLOT_LEASE_SECONDS = 60.0


def user_limit_name(provider_user_id: str) -> str:
    return f"email-sync:{provider_user_id}"


def ensure_concurrency_limit(name: str, limit: int = 1) -> None:
    """Create the global concurrency limit `name` unless it exists (safe against a concurrent creator)."""
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
            return
        except ObjectNotFound:
            pass
        with contextlib.suppress(ObjectAlreadyExists):
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=limit))


@contextlib.contextmanager
def user_sync_slot(provider_user_id: str, *, wait_seconds: float, lease_seconds: float) -> Iterator[bool]:
    """Hold the user's Prefect slot for the block; yields whether it was obtained."""
    name = user_limit_name(provider_user_id)
    with contextlib.ExitStack() as stack:
        try:
            ensure_concurrency_limit(name)
            stack.enter_context(
                concurrency(
                    name,
                    occupy=1,
                    timeout_seconds=wait_seconds,
                    lease_duration=max(MIN_SLOT_LEASE_SECONDS, lease_seconds),
                    strict=True,
                )
            )
            obtained = True
        except TimeoutError:
            logger.warning(
                "Prefect slot %s still held after %.0fs (a crashed sync's slot not yet expired); "
                "continuing under the Firestore lease",
                name,
                wait_seconds,
            )
            obtained = False
        yield obtained
