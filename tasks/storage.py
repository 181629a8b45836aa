"""Firestore tasks around a sync: who the user is, the per-user lease, and the cursors a sync leaves."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict

from emailsync.errors import FatalError
from emailsync.firestore.repositories import (
    CredentialsRepository,
    ProviderUserRepository,
    SyncStateRepository,
)
from emailsync.models import ProviderCredentials, ProviderUser, SyncState
from tasks.common import RETRY_POLICY


class SyncTarget(BaseModel):
    """The provider user a sync is for, with the credentials its Gmail client uses (never logged)."""

    model_config = ConfigDict(frozen=True)

    provider_user_id: str
    user: ProviderUser
    credentials: ProviderCredentials

    def __repr__(self) -> str:  # the credentials must not reach a log line through a repr
        return f"SyncTarget(provider_user_id={self.provider_user_id!r})"

    __str__ = __repr__


# persist_result=False: credentials must never be written to Prefect's result storage.
@task(name="resolve-provider-user", cache_policy=NO_CACHE, persist_result=False, **RETRY_POLICY)
def resolve_provider_user(provider_user_id: str) -> SyncTarget:
    user = ProviderUserRepository().get(provider_user_id)
    if user is None:
        raise FatalError(f"provider user {provider_user_id} does not exist")
    return SyncTarget(
        provider_user_id=provider_user_id,
        user=user,
        credentials=CredentialsRepository().get(provider_user_id),
    )


class LeaseAttempt(BaseModel):
    acquired: bool
    state: SyncState  # after the attempt: who holds the lease, and the cursors this sync starts from
    taken_over_from: str | None = None  # the sync whose expired lease this one took over


@task(name="acquire-sync-lease", cache_policy=NO_CACHE, **RETRY_POLICY)
def acquire_sync_lease(
    provider_user_id: str, sync_id: str, owner: str, timeout_seconds: float
) -> LeaseAttempt:
    """Take the per-user lease (free, expired, or already ours); the state tells who holds it otherwise."""
    repository = SyncStateRepository()
    previous = repository.get(provider_user_id).active_sync_id
    acquired = repository.acquire_lease(provider_user_id, sync_id, owner, timeout_seconds)
    taken_over = previous if acquired and previous not in (None, sync_id) else None
    return LeaseAttempt(acquired=acquired, state=repository.get(provider_user_id), taken_over_from=taken_over)


@task(name="record-sync-cursors", cache_policy=NO_CACHE, **RETRY_POLICY)
def record_sync_cursors(provider_user_id: str, *, history_id: str, backfill_completed: bool) -> None:
    """Where the next sync starts: a finished backfill clears its cursor; either way history moves on."""
    repository = SyncStateRepository()
    if backfill_completed:
        repository.complete_backfill(provider_user_id, history_id)
    else:
        repository.set_last_history_id(provider_user_id, history_id)


def release_sync_lease(provider_user_id: str, sync_id: str) -> bool:
    """Not a task: runs in `finally`, also when the flow is failing or being cancelled."""
    return SyncStateRepository().release_lease(provider_user_id, sync_id)
