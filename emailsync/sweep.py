"""The periodic sweep: which connected users need a sync now, found for the cost of one history.list
call each, and every user's outcome named.

A user needs a sync when its backfill is unfinished (no `lastHistoryId`, or a backfill cursor left),
its last sync failed, its history expired (404), or history.list shows any record since
`lastHistoryId`. Everyone else is idle: one call of 2 quota units, no messages.get, no model, no
progress document. Users whose Gmail grant needs re-authorization, and users whose sync is running
(a live lease), are skipped without a Gmail call. Checks run concurrently on a bounded thread pool.

Nothing is marked done here: a user the sweep could not check or start is simply found again by the
next sweep. Plain Python; the orchestration passes how a sync is started (`start_sync`).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from enum import StrEnum

from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter
from pydantic import BaseModel, Field

from emailsync.config import Settings, get_settings
from emailsync.errors import HistoryExpiredError, describe_error
from emailsync.firestore.documents import SYNC_STATE
from emailsync.firestore.users import CredentialsRepository
from emailsync.gmail.settings import RetryPolicy
from emailsync.gmail.watch import GmailWatchClient
from emailsync.lifecycle.rules import automatic_sync_blocked
from emailsync.models import ProviderUser, SyncProgress, SyncState, SyncStatus

logger = logging.getLogger("emailsync.sweep")

# A sweep must not sit for minutes on one unreachable mailbox: fewer, shorter retries than a sync's;
# the next sweep tries again anyway.
SWEEP_RETRY_POLICY = RetryPolicy(delays_seconds=(1.0, 2.0), max_attempts=3)
_GET_ALL_CHUNK = 500


class Outcome(StrEnum):
    IDLE = "idle"  # checked, nothing new
    STARTED = "started"  # a sync was started
    SKIPPED = "skipped"  # not checked on purpose (needs reauth, a sync is running)
    FAILED = "failed"  # could not be checked or its sync could not be started: the next sweep retries


class Reason(StrEnum):
    NO_CHANGES = "no_changes"
    CHANGES = "changes"
    HISTORY_EXPIRED = "history_expired"
    BACKFILL_UNFINISHED = "backfill_unfinished"
    LAST_SYNC_FAILED = "last_sync_failed"
    NEEDS_REAUTH = "needs_reauth"
    ALREADY_SYNCING = "already_syncing"
    CHECK_FAILED = "check_failed"
    START_FAILED = "start_failed"


class UserOutcome(BaseModel):
    provider_user_id: str
    outcome: Outcome
    reason: Reason
    error: str | None = None  # why the check or the start failed
    started: str | None = None  # what the start returned (sync id / flow run id)
    sync_result: str | None = None  # a sync run in this process: how it ended (completed, skipped, failed: …)


class SweepResult(BaseModel):
    """Every user of the shard with its outcome, and what the sweep cost."""

    shard_index: int = 0
    shard_count: int = 1
    users: int = 0
    outcomes: list[UserOutcome] = Field(default_factory=list)
    history_calls: int = 0
    wall_seconds: float = 0.0

    def of(self, outcome: Outcome) -> list[UserOutcome]:
        return [item for item in self.outcomes if item.outcome == outcome]

    def counts(self) -> dict[str, int]:
        return {outcome.value: len(self.of(outcome)) for outcome in Outcome}

    def summary_lines(self) -> list[str]:
        """One line per outcome category, naming the users of every category but idle."""
        lines = []
        for outcome in Outcome:
            items = self.of(outcome)
            line = f"{outcome.value}: {len(items)}"
            if items and outcome != Outcome.IDLE:
                line += " — " + ", ".join(_describe(item) for item in items)
            lines.append(line)
        return lines


def _describe(item: UserOutcome) -> str:
    text = f"{item.provider_user_id} ({item.reason.value}"
    if item.error:
        text += f": {item.error}"
    if item.sync_result and item.sync_result != "completed":  # a sync run here that did not complete
        text += f"; sync {item.sync_result}"
    return text + ")"


def in_shard(provider_user_id: str, shard_index: int, shard_count: int) -> bool:
    """Stable across processes and machines (not Python's salted `hash`)."""
    if shard_count <= 1:
        return True
    digest = hashlib.sha256(provider_user_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % shard_count == shard_index


def read_states(client: firestore.Client, provider_user_ids: list[str]) -> dict[str, SyncState]:
    """`syncState` of many users in a few batchGets (a missing document is an empty state)."""
    collection = client.collection(SYNC_STATE)
    states = {provider_user_id: SyncState() for provider_user_id in provider_user_ids}
    for start in range(0, len(provider_user_ids), _GET_ALL_CHUNK):
        refs = [collection.document(i) for i in provider_user_ids[start : start + _GET_ALL_CHUNK]]
        for snapshot in client.get_all(refs):
            if snapshot.exists:
                states[snapshot.id] = SyncState.from_firestore(snapshot.to_dict())
    return states


def latest_failures(client: firestore.Client) -> dict[str, datetime]:
    """provider user id -> start of its latest failed sync (one query over the failed documents)."""
    query = (
        client.collection(SyncProgress.COLLECTION)
        .where(filter=FieldFilter("status", "==", SyncStatus.FAILED.value))
        .select(["providerUserId", "startedAt"])
    )
    latest: dict[str, datetime] = {}
    for snapshot in query.stream():
        data = snapshot.to_dict() or {}
        user, started = data.get("providerUserId"), data.get("startedAt")
        if isinstance(user, str) and isinstance(started, datetime):
            latest[user] = max(started, latest.get(user, started))
    return latest


def precheck(
    provider_user_id: str,
    user: ProviderUser,
    state: SyncState,
    last_failure: datetime | None,
    now: datetime,
) -> tuple[Outcome, Reason] | None:
    """The decision the stored documents alone allow; None: ask Gmail's history."""
    if automatic_sync_blocked(user) is not None:  # e.g. a revoked grant: left alone until reconnect
        return Outcome.SKIPPED, Reason.NEEDS_REAUTH
    if state.active_sync_id and state.lease_expires_at is not None and state.lease_expires_at > now:
        return Outcome.SKIPPED, Reason.ALREADY_SYNCING
    if not state.backfill_completed or not state.last_history_id or state.backfill_cursor is not None:
        return Outcome.STARTED, Reason.BACKFILL_UNFINISHED
    if last_failure is not None and (state.last_synced_at is None or last_failure > state.last_synced_at):
        return Outcome.STARTED, Reason.LAST_SYNC_FAILED
    return None


StartSync = Callable[[str, ProviderUser, Reason], str | None]
GmailFactory = Callable[[str], GmailWatchClient]


class Sweep:
    """One sweep over `users` (id -> ProviderUser). `start_sync(id, user, reason)` starts a sync and
    returns an id for the result (it may raise: the user is then reported failed)."""

    def __init__(
        self,
        client: firestore.Client,
        start_sync: StartSync,
        *,
        settings: Settings | None = None,
        max_workers: int | None = None,
        gmail_factory: GmailFactory | None = None,
    ) -> None:
        self.client = client
        self.start_sync = start_sync
        self.settings = settings or get_settings()
        self.max_workers = max(1, max_workers or self.settings.sweep_concurrency)
        self.gmail_factory = gmail_factory or self._gmail_client
        self._credentials = CredentialsRepository(client)

    def _gmail_client(self, provider_user_id: str) -> GmailWatchClient:
        return GmailWatchClient(
            self._credentials.get(provider_user_id), self.settings, retry_policy=SWEEP_RETRY_POLICY
        )

    def run(
        self,
        users: Iterable[tuple[str, ProviderUser]],
        *,
        shard_index: int = 0,
        shard_count: int = 1,
    ) -> SweepResult:
        if not 0 <= shard_index < max(shard_count, 1):
            raise ValueError(f"shard_index {shard_index} is not in 0..{shard_count - 1}")
        started = time.perf_counter()
        mine = [(i, user) for i, user in users if in_shard(i, shard_index, shard_count)]
        states = read_states(self.client, [i for i, _ in mine])
        failures = latest_failures(self.client)
        now = datetime.now(UTC)
        result = SweepResult(shard_index=shard_index, shard_count=shard_count, users=len(mine))
        with ThreadPoolExecutor(max_workers=self.max_workers, thread_name_prefix="sweep") as pool:
            futures = [
                pool.submit(self._sweep_one, i, user, states[i], failures.get(i), now) for i, user in mine
            ]
            for (provider_user_id, _user), future in zip(mine, futures, strict=True):
                try:
                    outcome, called = future.result()
                except Exception as exc:  # a bug for one user must not hide the others' outcomes
                    outcome, called = _failed(provider_user_id, Reason.CHECK_FAILED, exc), False
                result.outcomes.append(outcome)
                result.history_calls += int(called)
        result.wall_seconds = time.perf_counter() - started
        logger.info(
            "sweep of shard %d/%d: %d users, %s",
            shard_index,
            shard_count,
            result.users,
            ", ".join(f"{n} {name}" for name, n in result.counts().items()),
        )
        return result

    def _sweep_one(
        self,
        provider_user_id: str,
        user: ProviderUser,
        state: SyncState,
        last_failure: datetime | None,
        now: datetime,
    ) -> tuple[UserOutcome, bool]:
        decided = precheck(provider_user_id, user, state, last_failure, now)
        called = False
        if decided is None:
            called = True
            try:
                check = self.gmail_factory(provider_user_id).history_changed_since(str(state.last_history_id))
                decided = (
                    (Outcome.STARTED, Reason.CHANGES) if check.changed else (Outcome.IDLE, Reason.NO_CHANGES)
                )
            except HistoryExpiredError:
                decided = Outcome.STARTED, Reason.HISTORY_EXPIRED
            except Exception as exc:
                logger.warning("sweep could not check %s: %s", provider_user_id, describe_error(exc))
                return _failed(provider_user_id, Reason.CHECK_FAILED, exc), called
        outcome, reason = decided
        if outcome != Outcome.STARTED:
            return UserOutcome(provider_user_id=provider_user_id, outcome=outcome, reason=reason), called
        try:
            handle = self.start_sync(provider_user_id, user, reason)
        except Exception as exc:
            logger.error("sweep could not start a sync of %s: %s", provider_user_id, describe_error(exc))
            return _failed(provider_user_id, Reason.START_FAILED, exc), called
        return (
            UserOutcome(provider_user_id=provider_user_id, outcome=outcome, reason=reason, started=handle),
            called,
        )


def _failed(provider_user_id: str, reason: Reason, exc: BaseException) -> UserOutcome:
    return UserOutcome(
        provider_user_id=provider_user_id, outcome=Outcome.FAILED, reason=reason, error=describe_error(exc)
    )
