"""What a sync walks: `BackfillPlan` (weekly windows newest first, resumed from the checkpoint),
`IncrementalPlan` (every change Gmail's history holds since `lastHistoryId`, applied page by page) or
`ReconcilePlan` (that history expired: the mirror compared with a fresh listing of the mailbox).

A plan answers four questions: the first batch to fetch, the batch after a fetched one, the checkpoint to
save once a batch is stored, and what to record when the sync is done. `choose_plan` is the one place
where the mode is decided: incremental when a finished backfill left a historyId, backfill otherwise,
and a reconcile when that history has expired. `catch_up_plan` follows a finished backfill with the
changes made while it ran (history from the moment it began).

Plain Python: the Gmail calls come through `PlanningCalls`, which the orchestration implements with its
retried tasks (and tests with fakes).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol

from pydantic import BaseModel, Field

from emailsync.errors import HistoryExpiredError
from emailsync.models import BackfillCursor, SyncMode
from emailsync.sync.mirror import MirrorStep, StoredState, history_steps, in_batches, reconcile_ops
from emailsync.sync.windows import lookback_bound

if TYPE_CHECKING:
    from emailsync.gmail.types import GmailProfile, HistoryChanges
    from emailsync.sync.batch import Batch
    from emailsync.sync.run import SyncRun


class BatchRequest(BaseModel):
    """What `fetch_email_batch` fetches: the backfill walk from `cursor`, the given `ids`, or what a
    mirror `step` needs downloaded (its other operations travel with it)."""

    batch_size: int
    cursor: BackfillCursor | None = None
    bound: datetime | None = None
    ids: list[str] = Field(default_factory=list)
    step: MirrorStep | None = None


class Completion(BaseModel):
    """The cursors a finished sync leaves for the next one."""

    history_id: str
    backfill_completed: bool


class PlanningCalls(Protocol):
    """The Gmail questions a plan is chosen with (and the enricher warm-up it may start)."""

    def list_history(self, start_history_id: str) -> HistoryChanges: ...

    def read_profile(self) -> GmailProfile: ...

    def stored_states(self, ids: list[str]) -> dict[str, StoredState]: ...

    def list_mailbox(self, after: datetime | None) -> dict[str, list[str]]: ...

    def all_stored_states(self) -> dict[str, StoredState]: ...

    def list_trash_and_spam(self, after: datetime | None) -> set[str]: ...

    def estimate_messages_since(self, bound: datetime) -> int: ...

    def find_backfill_start(
        self, now: datetime, bound: datetime | None, start_history_id: str
    ) -> BackfillCursor | None: ...

    def warm_up_enricher(self) -> None: ...


class SyncPlan:
    """The walk of one sync; subclasses say how it goes on."""

    mode: SyncMode

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size

    def first_request(self) -> BatchRequest | None:
        raise NotImplementedError

    def request_after(self, batch: Batch) -> BatchRequest | None:
        raise NotImplementedError

    def checkpoint_after(self, batch: Batch) -> BackfillCursor | None:
        """The backfill cursor saved (with the lease renewal) once `batch` is stored; None: none."""
        return None

    def completion(self) -> Completion:
        raise NotImplementedError


class IncrementalPlan(SyncPlan):
    """Mirror steps (history pages cut into batches); history moves on to `history_id` at the end, and
    to each step's own historyId as soon as that step is stored."""

    mode = SyncMode.INCREMENTAL

    def __init__(self, steps: list[MirrorStep], history_id: str, *, batch_size: int) -> None:
        super().__init__(batch_size)
        self.history_id = history_id
        self._batches = in_batches(steps, batch_size)
        self._next = 0

    @property
    def operations(self) -> int:
        return sum(len(batch.ops) for batch in self._batches)

    @property
    def downloads(self) -> int:
        return sum(len(batch.ops.fetch) for batch in self._batches)

    def _take(self) -> BatchRequest | None:
        if self._next >= len(self._batches):
            return None
        step = self._batches[self._next]
        self._next += 1
        return BatchRequest(batch_size=self.batch_size, ids=list(step.ops.fetch), step=step)

    def first_request(self) -> BatchRequest | None:
        return self._take()

    def request_after(self, batch: Batch) -> BatchRequest | None:
        return self._take()

    def completion(self) -> Completion:
        return Completion(history_id=self.history_id, backfill_completed=False)


class ReconcilePlan(IncrementalPlan):
    """After history expired: the operations that make the mirror equal a fresh listing; history goes on
    from the profile historyId read before that listing."""

    mode = SyncMode.BACKFILL


class BackfillPlan(SyncPlan):
    """The walk from `cursor` (None: nothing to back-fill) down to `bound`; the next incremental sync
    starts at `start_history_id`, the historyId of the moment the backfill began."""

    mode = SyncMode.BACKFILL

    def __init__(
        self,
        cursor: BackfillCursor | None,
        *,
        bound: datetime | None,
        start_history_id: str,
        batch_size: int,
    ) -> None:
        super().__init__(batch_size)
        self.cursor = cursor
        self.bound = bound
        self.start_history_id = start_history_id

    def _request(self, cursor: BackfillCursor | None) -> BatchRequest | None:
        if cursor is None:
            return None
        return BatchRequest(batch_size=self.batch_size, cursor=cursor, bound=self.bound)

    def first_request(self) -> BatchRequest | None:
        return self._request(self.cursor)

    def request_after(self, batch: Batch) -> BatchRequest | None:
        # The walk goes on from where the previous batch's listing ended, known as soon as it is fetched.
        return self._request(batch.cursor_after)

    def checkpoint_after(self, batch: Batch) -> BackfillCursor | None:
        return batch.cursor_after

    def completion(self) -> Completion:
        return Completion(history_id=self.start_history_id, backfill_completed=True)


def choose_plan(
    run: SyncRun,
    calls: PlanningCalls,
    *,
    lookback_weeks: int | None,
    batch_size: int,
    now: datetime | None = None,
) -> SyncPlan:
    """Incremental, backfill, or reconcile after expired history; moves the run to in_progress."""
    state = run.state
    if state is not None and state.backfill_completed and state.last_history_id:
        bound = lookback_bound(now or datetime.now(UTC), lookback_weeks)
        plan = _history_plan(run, calls, state.last_history_id, batch_size=batch_size, bound=bound)
        run.start(plan.mode, plan.operations)
        if plan.downloads:  # an idle user costs one history call, not a model load
            calls.warm_up_enricher()
        return plan
    calls.warm_up_enricher()  # loads the model while the first batch downloads
    return _backfill_plan(run, calls, lookback_weeks=lookback_weeks, batch_size=batch_size, now=now)


def catch_up_plan(run: SyncRun, calls: PlanningCalls, done: SyncPlan) -> SyncPlan | None:
    """After a backfill that walked the mailbox: the changes made while it ran (history from the moment
    it began), so the sync ends with the mirror equal to Gmail. None when nothing follows."""
    if not isinstance(done, BackfillPlan) or done.cursor is None:
        return None
    plan = _history_plan(run, calls, done.start_history_id, batch_size=done.batch_size, bound=done.bound)
    if plan.downloads:
        calls.warm_up_enricher()
    return plan


def _history_plan(
    run: SyncRun, calls: PlanningCalls, start_history_id: str, *, batch_size: int, bound: datetime | None
) -> IncrementalPlan:
    try:
        changes = calls.list_history(start_history_id)
    except HistoryExpiredError as exc:
        run.logger.warning(
            "history of %s expired (%s): reconciling with the mailbox", run.provider_user_id, exc
        )
        run.summary.fell_back_to_backfill = run.summary.reconciled = True
        return _reconcile_plan(calls, batch_size=batch_size, bound=bound)
    touched = list(dict.fromkeys(change.message_id for change in changes.changes))
    stored = calls.stored_states(touched) if touched else {}
    return IncrementalPlan(history_steps(changes, stored), changes.history_id, batch_size=batch_size)


def _reconcile_plan(calls: PlanningCalls, *, batch_size: int, bound: datetime | None) -> ReconcilePlan:
    # Changes made during the listing are in the history after this profile: the next sync applies them.
    profile = calls.read_profile()
    # With a look-back bound the mirror is the mail since that bound: older stored mail is no ghost.
    mailbox, stored = calls.list_mailbox(bound), calls.all_stored_states()
    ghosts = [i for i, state in stored.items() if i not in mailbox]
    outside = calls.list_trash_and_spam(bound) if ghosts else set()
    ops = reconcile_ops(mailbox, stored, since=bound, trash_and_spam=outside)
    return ReconcilePlan([MirrorStep(ops=ops)], profile.history_id, batch_size=batch_size)


def _backfill_plan(
    run: SyncRun,
    calls: PlanningCalls,
    *,
    lookback_weeks: int | None,
    batch_size: int,
    now: datetime | None,
) -> BackfillPlan:
    now = now or datetime.now(UTC)
    bound = lookback_bound(now, lookback_weeks)
    profile = calls.read_profile()
    # A checkpoint exists only when a backfill was interrupted (completion clears it): resume from it.
    cursor = run.state.backfill_cursor if run.state is not None else None
    run.summary.mode, run.summary.resumed = SyncMode.BACKFILL, cursor is not None
    # Messages arriving while we walk are newer than the walk's start: the next incremental sync takes
    # them from the historyId of the moment the backfill began (kept in the cursor across resumes).
    start_history_id = (cursor.start_history_id if cursor else None) or profile.history_id
    total = calls.estimate_messages_since(bound) if bound is not None else profile.messages_total
    run.start(SyncMode.BACKFILL, total)
    if cursor is None:
        cursor = calls.find_backfill_start(now, bound, start_history_id)
    else:
        run.resume_counts(cursor.emails_processed, cursor.batches)
    return BackfillPlan(cursor, bound=bound, start_history_id=start_history_id, batch_size=batch_size)
