"""Prefect's per-user concurrency limit `email-sync:{providerUserId}` (limit 1), held under a lease that
dies with its holder.

The Firestore lease is the real guard: a sync enters here only once it holds that lease, so a slot still
occupied means its holder died. The slot is taken with a Prefect slot lease (the API's minimum, a
minute) that the sync's own heartbeat renews (`SyncRun.heartbeat`): a killed sync stops renewing it and
the server's repossessor frees it. Quicker still, the lease id is kept in `syncState.slotLeaseId`, and a
sync that takes over a dead sync's Firestore lease releases the dead sync's slot lease before asking for
the slot (`SyncRun.stale_slot_lease_id`), so it does not wait at all. A slot that stays occupied anyway
(a server that lost its leases) is waited for no longer than a sync lease lasts, then the sync goes on
under the Firestore lease alone.

Prefect skips a limit that does not exist, so it is created on first use.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from uuid import UUID

import httpx
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.client.schemas.objects import ConcurrencyLeaseHolder
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

from emailsync.sync.run import SyncRun

logger = logging.getLogger(__name__)

# The Prefect API refuses slot leases shorter than a minute.
MIN_SLOT_LEASE_SECONDS = 60.0
HTTP_LOCKED = 423
# Between two attempts at an occupied slot (the server's Retry-After, capped).
MAX_SLOT_POLL_SECONDS = 2.0


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


def release_slot_lease(lease_id: str) -> None:
    """Free the slots of a Prefect slot lease (a no-op when the lease is gone already)."""
    with get_client(sync_client=True) as client:
        client.release_concurrency_slots_with_lease(UUID(lease_id))


def _acquire(
    client: SyncPrefectClient,
    name: str,
    wait_seconds: float,
    lease_seconds: float,
    holder: ConcurrencyLeaseHolder | None,
) -> str | None:
    """The id of a slot lease on `name`, or None when the slot stayed occupied for `wait_seconds`."""
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            response = client.increment_concurrency_slots_with_lease(
                names=[name], slots=1, mode="concurrency", lease_duration=lease_seconds, holder=holder
            )
            return str(response.json()["lease_id"])
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code != HTTP_LOCKED:
                raise
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            retry_after = float(exc.response.headers.get("Retry-After") or 1.0)
            time.sleep(min(retry_after, MAX_SLOT_POLL_SECONDS, remaining))


@contextlib.contextmanager
def user_sync_slot(run: SyncRun, *, wait_seconds: float) -> Iterator[bool]:
    """Hold the user's Prefect slot for the block; yields whether it was obtained."""
    name = user_limit_name(run.provider_user_id)
    ensure_concurrency_limit(name)
    if run.stale_slot_lease_id:
        try:
            release_slot_lease(run.stale_slot_lease_id)
            run.logger.info("released the Prefect slot of the stopped sync it took over")
        except Exception as exc:  # its lease then expires on its own
            run.logger.warning("could not release the Prefect slot of the stopped sync: %s", exc)
    holder = ConcurrencyLeaseHolder(type="flow_run", id=UUID(run.flow_run_id)) if run.flow_run_id else None
    lease_seconds = MIN_SLOT_LEASE_SECONDS
    with get_client(sync_client=True) as client:
        lease_id = _acquire(client, name, wait_seconds, lease_seconds, holder)
    if lease_id is None:
        run.logger.warning(
            "Prefect slot %s still held after %.0fs (a stopped sync's slot not yet expired); "
            "continuing under the Firestore lease",
            name,
            wait_seconds,
        )
        yield False
        return
    run.record_slot_lease(lease_id)
    released = threading.Event()
    run.heartbeat.also(lambda: released.is_set() or _renew(lease_id, lease_seconds))
    try:
        yield True
    finally:
        released.set()
        try:
            release_slot_lease(lease_id)
        except Exception as exc:  # the slot's lease expires on its own a minute later
            run.logger.warning("could not release Prefect slot %s: %s", name, exc)


def _renew(lease_id: str, lease_seconds: float) -> None:
    with get_client(sync_client=True) as client:
        client.renew_concurrency_lease(UUID(lease_id), lease_duration=lease_seconds)
