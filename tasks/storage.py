"""Firestore tasks around a sync: who the user is, the per-user lease, and the cursors a sync leaves
(the lease is released by `SyncRun.reported()`, not by a task: that runs also when the flow is failing
or being cancelled)."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict

from emailsync.errors import FatalError
from emailsync.firestore.sync_state import SyncStateRepository
from emailsync.firestore.users import CredentialsRepository, ProviderUserRepository
from emailsync.models import ProviderCredentials, ProviderUser
from emailsync.sync.run import LeaseAttempt, SyncRun
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


@task(name="acquire-sync-lease", cache_policy=NO_CACHE, **RETRY_POLICY)
def acquire_sync_lease(run: SyncRun, owner: str) -> LeaseAttempt:
    """Take the per-user lease (free, expired, or already ours); the state tells who holds it otherwise."""
    return run.acquire_lease(owner)


@task(name="record-sync-cursors", cache_policy=NO_CACHE, **RETRY_POLICY)
def record_sync_cursors(provider_user_id: str, *, history_id: str, backfill_completed: bool) -> None:
    """Where the next sync starts: a finished backfill clears its cursor; either way history moves on."""
    repository = SyncStateRepository()
    if backfill_completed:
        repository.complete_backfill(provider_user_id, history_id)
    else:
        repository.set_last_history_id(provider_user_id, history_id)
