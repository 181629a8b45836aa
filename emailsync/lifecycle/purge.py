"""`EMAILSYNC_ON_DISCONNECT=purge`: remove a disconnected user's emails, sync state and credentials.

Resumable and idempotent: `request_purge` first marks `syncState/{id}` (`purgePending`), so a purge
that dies halfway is found again (`pending_purges`) and simply run again; every step deletes what is
still there. The purge holds the user's sync lease while it runs (no sync can start, a running one is
waited for), deletes the credentials, then the emails in bounded batches, and the sync state (marker
and lease with it) last. A user who reconnects meanwhile stops it: the rest of their mail stays and
their next sync is a fresh backfill. `syncProgress` documents are kept: they hold no mail, only the
history of the syncs, and expire through their TTL.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime

from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter
from pydantic import BaseModel

from emailsync.config import get_settings
from emailsync.errors import RetriableError
from emailsync.firestore.documents import EMAILS, PROVIDER_USERS, SYNC_STATE
from emailsync.firestore.sync_state import SyncStateRepository
from emailsync.firestore.users import CredentialsRepository, ProviderUserRepository

logger = logging.getLogger(__name__)

# Deletes per commit: small enough that a purge of a large mailbox never holds one huge request,
# and that a crash loses little work.
PURGE_BATCH_SIZE = 200
PURGE_PENDING_FIELD = "purgePending"
LEASE_POLL_SECONDS = 0.5


class PurgeSummary(BaseModel):
    provider_user_id: str
    emails_deleted: int = 0
    batches: int = 0
    credentials_deleted: bool = False
    sync_state_deleted: bool = False
    completed: bool = False
    stopped: str | None = None  # why it stopped before the end (the user reconnected)


def purge_lease_id(provider_user_id: str) -> str:
    """The purge's id in the lease: the same for every run, so a rerun takes over a dead purge's lease."""
    return f"purge-{provider_user_id}"


def request_purge(client: firestore.Client, provider_user_id: str) -> None:
    """Mark the purge as wanted before anything is deleted: a crash after this point is resumed."""
    client.collection(SYNC_STATE).document(provider_user_id).set(
        {PURGE_PENDING_FIELD: True, "purgeRequestedAt": datetime.now(UTC)}, merge=True
    )


def pending_purges(client: firestore.Client) -> list[str]:
    """Provider users whose purge was requested and has not finished (e.g. its process died)."""
    query = client.collection(SYNC_STATE).where(filter=FieldFilter(PURGE_PENDING_FIELD, "==", True))
    return sorted(snapshot.id for snapshot in query.stream())


def _reconnected(users: ProviderUserRepository, provider_user_id: str) -> bool:
    user = users.get(provider_user_id)
    return bool(user and user.gmail_active)


def purge_provider_user(
    client: firestore.Client,
    provider_user_id: str,
    *,
    batch_size: int = PURGE_BATCH_SIZE,
    lease_wait_seconds: float | None = None,
    stopping: Callable[[], bool] = lambda: False,
) -> PurgeSummary:
    """Delete the user's emails, sync state and credentials (see the module docstring).

    `stopping()` true (the process shuts down) ends the purge between two batches; its marker stays, so
    it is resumed later."""
    settings = get_settings()
    users = ProviderUserRepository(client)
    sync_state = SyncStateRepository(client)
    summary = PurgeSummary(provider_user_id=provider_user_id)
    if _reconnected(users, provider_user_id):
        _abandon(client, provider_user_id, summary, "Gmail is connected again")
        return summary
    request_purge(client, provider_user_id)
    lease_id = purge_lease_id(provider_user_id)
    owner = f"{socket.gethostname()}:{os.getpid()}:purge"
    timeout = settings.lease_timeout_seconds
    # A running sync notices the disconnect at its next batch boundary and gives the lease up.
    deadline = time.monotonic() + (timeout + 5 if lease_wait_seconds is None else lease_wait_seconds)
    while not sync_state.acquire_lease(provider_user_id, lease_id, owner, timeout):
        if stopping():
            summary.stopped = "shutting down (resumed later)"
            return summary
        if time.monotonic() > deadline:
            raise RetriableError(f"a sync of {provider_user_id} still holds its lease; purge again later")
        time.sleep(LEASE_POLL_SECONDS)
    # Whatever happens next, a later sync starts from scratch: the mail it would build on is going.
    client.collection(SYNC_STATE).document(provider_user_id).update(
        {"backfillCompleted": False, "backfillCursor": None, "lastHistoryId": None}
    )
    if _reconnected(users, provider_user_id):
        _abandon(client, provider_user_id, summary, "Gmail was reconnected during the purge")
        return summary
    CredentialsRepository(client).delete(provider_user_id)
    summary.credentials_deleted = True

    emails = client.collection(PROVIDER_USERS).document(provider_user_id).collection(EMAILS)
    while True:
        snapshots = list(emails.select([]).limit(batch_size).stream())
        if not snapshots:
            break
        if stopping():
            summary.stopped = "shutting down (resumed later)"
            return summary
        if _reconnected(users, provider_user_id):
            _abandon(client, provider_user_id, summary, "Gmail was reconnected during the purge")
            return summary
        batch = client.batch()
        for snapshot in snapshots:
            batch.delete(snapshot.reference)
        batch.commit()
        summary.emails_deleted += len(snapshots)
        summary.batches += 1
        sync_state.renew_lease(provider_user_id, lease_id, timeout)
        logger.info("purge of %s: %d emails deleted so far", provider_user_id, summary.emails_deleted)

    client.collection(SYNC_STATE).document(provider_user_id).delete()  # marker and lease go with it
    summary.sync_state_deleted = summary.completed = True
    logger.info(
        "purged %s: %d emails, credentials and sync state deleted",
        provider_user_id,
        summary.emails_deleted,
    )
    return summary


def _abandon(client: firestore.Client, provider_user_id: str, summary: PurgeSummary, why: str) -> None:
    """The user is connected again: stop, drop the marker and the lease; the next sync back-fills."""
    document = client.collection(SYNC_STATE).document(provider_user_id)
    if document.get().exists:
        fields: dict[str, object] = {PURGE_PENDING_FIELD: firestore.DELETE_FIELD}
        if SyncStateRepository(client).get(provider_user_id).active_sync_id == purge_lease_id(
            provider_user_id
        ):
            fields.update(activeSyncId=None, leaseOwner=None, leaseExpiresAt=None)
        document.update(fields)
    summary.stopped = why
    logger.info("purge of %s stopped: %s", provider_user_id, why)
