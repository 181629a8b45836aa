"""`SyncRun` (lease, progress transitions, the readable error) and the two plans, with small fakes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from emailsync.errors import (
    AuthorizationRevokedError,
    HistoryExpiredError,
    LeaseHeldError,
    RetriableError,
    describe_error,
)
from emailsync.gmail.types import GmailProfile, HistoryChange, HistoryChanges, HistoryPage
from emailsync.models import BackfillCursor, SyncMode, SyncState, SyncTrigger, SyncWindow
from emailsync.sync.batch import Batch
from emailsync.sync.mirror import StoredState
from emailsync.sync.plan import BackfillPlan, IncrementalPlan, ReconcilePlan, choose_plan
from emailsync.sync.run import SyncRun

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
WINDOW = SyncWindow(start=NOW - timedelta(weeks=1), end=NOW)


class FakeProgress:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def create_pending(self, sync_id: str, *args: Any) -> None:
        self.calls.append(("pending", sync_id))

    def start(self, sync_id: str, mode: SyncMode, flow_run_id: str | None, total: int | None) -> None:
        self.calls.append(("start", sync_id, mode, total))

    def update(self, sync_id: str, progress: float, **details: Any) -> None:
        self.calls.append(("update", sync_id, progress, details))

    def complete(self, sync_id: str, **details: Any) -> None:
        self.calls.append(("complete", sync_id, details))

    def fail(self, sync_id: str, error: str, **details: Any) -> None:
        self.calls.append(("fail", sync_id, error, details))

    def skip(self, sync_id: str, active_sync_id: str | None, reason: str, **details: Any) -> None:
        self.calls.append(
            ("skip", sync_id, {**details, "active_sync_id": active_sync_id, "skip_reason": reason})
        )


class FakeSyncState:
    """One user's syncState: the lease is free, held by `holder`, or (expired) taken over."""

    def __init__(self, state: SyncState | None = None, *, lease_free: bool = True) -> None:
        self.state = state or SyncState()
        self.lease_free = lease_free
        self.released: list[str] = []
        self.checkpoints: list[BackfillCursor | None] = []

    def get(self, provider_user_id: str) -> SyncState:
        return self.state

    def acquire_lease(
        self,
        provider_user_id: str,
        sync_id: str,
        owner: str,
        timeout: float,
        *,
        holder: str | None = None,
        take_over_from: str | None = None,
    ) -> bool:
        if not self.lease_free:
            return False
        self.state = self.state.model_copy(
            update={"active_sync_id": sync_id, "lease_owner": owner, "lease_holder": holder}
        )
        return True

    def renew_lease(self, provider_user_id: str, sync_id: str, timeout: float) -> bool:
        return self.state.active_sync_id == sync_id

    def release_lease(self, provider_user_id: str, sync_id: str) -> bool:
        self.released.append(sync_id)
        return True

    def checkpoint(
        self,
        provider_user_id: str,
        sync_id: str,
        cursor: BackfillCursor | None,
        timeout: float,
        *,
        history_id: str | None = None,
    ) -> bool:
        self.checkpoints.append(cursor)
        return self.state.active_sync_id == sync_id


def make_run(sync_state: FakeSyncState | None = None) -> tuple[SyncRun, FakeProgress, FakeSyncState]:
    progress, sync_state = FakeProgress(), sync_state or FakeSyncState()
    run = SyncRun(
        sync_id="sync-b",
        provider_user_id="pu-1",
        trigger=SyncTrigger.CONNECT,
        app_user_id="app-1",
        family_id=None,
        progress=progress,  # type: ignore[arg-type]
        sync_state=sync_state,  # type: ignore[arg-type]
        lease_timeout_seconds=300,
    )
    return run, progress, sync_state


def held(run: SyncRun) -> SyncRun:
    run.hold(run.acquire_lease("worker"))
    return run


# ------------------------------------------------------------------------------------------ SyncRun


def test_a_free_lease_is_taken_and_released_when_the_run_ends():
    run, progress, sync_state = make_run()
    held(run)
    assert not run.skipped and run.state is not None and run.state.active_sync_id == "sync-b"
    with run.reported():
        pass
    assert sync_state.released == ["sync-b"]
    assert progress.calls[-1][0] == "complete" and progress.calls[-1][2]["trigger"] is SyncTrigger.CONNECT


def test_a_lease_held_by_another_sync_skips_the_trigger_and_says_why():
    run, progress, _ = make_run(FakeSyncState(SyncState(active_sync_id="sync-a"), lease_free=False))
    held(run)
    assert run.skipped and run.summary.skipped and run.summary.active_sync_id == "sync-a"
    [(kind, sync_id, details)] = progress.calls
    assert (kind, sync_id) == ("skip", "sync-b")  # its own terminal status, never "completed 100%"
    assert details["active_sync_id"] == "sync-a"
    assert details["skip_reason"] == "already_syncing"


def test_taking_over_an_expired_lease_marks_the_dead_sync_interrupted():
    run, progress, _ = make_run(FakeSyncState(SyncState(active_sync_id="sync-dead")))
    attempt = run.acquire_lease("worker")
    assert attempt.acquired and attempt.taken_over_from == "sync-dead"
    run.hold(attempt)
    # Marked before `hold` returns: not left to a thread that may die with this worker.
    [(_, sync_id, error, details)] = [call for call in progress.calls if call[0] == "fail"]
    assert sync_id == "sync-dead" and "sync-b resumed it" in error and details == {"resumed_by": "sync-b"}


def test_a_failing_run_writes_the_readable_cause_and_still_releases_the_lease():
    run, progress, sync_state = make_run()
    held(run)
    with pytest.raises(AuthorizationRevokedError), run.reported():
        raise AuthorizationRevokedError("invalid_grant")
    [(_, _, error, details)] = [call for call in progress.calls if call[0] == "fail"]
    assert error.startswith("Gmail authorization revoked") and "batches" in details
    assert sync_state.released == ["sync-b"]


def test_start_moves_the_run_to_in_progress_in_the_chosen_mode():
    run, progress, _ = make_run()
    run.start(SyncMode.BACKFILL, 42)
    assert progress.calls == [("start", "sync-b", SyncMode.BACKFILL, 42)]
    assert run.summary.mode is SyncMode.BACKFILL and run.summary.emails_total_estimate == 42


def test_a_parked_batch_is_kept_until_recorded_and_counted_once():
    run, progress, sync_state = make_run()
    held(run)
    run.start(SyncMode.BACKFILL, 28)
    fetched = Batch(ids=["a", "b"], emails_fetched=1, already_enriched=1, window=WINDOW)
    handle = run.park(fetched, ["m"])  # type: ignore[list-item]
    assert len(handle.ids) == 2 and handle.emails_fetched == 1
    assert run.parked(handle) == ["m"]
    stored = handle.model_copy(
        update={
            "stored": True,
            "emails_stored": 1,
            "emails_enriched": 1,
            "tag_counts": {"news": 1},
            "wall_seconds": 0.5,
        }
    )
    run.record(stored, cursor(page_token="p2"))
    assert (run.summary.emails_processed, run.summary.batches, run.percent) == (2, 1, 7)
    assert run.summary.tag_counts == {"news": 1} and run.summary.current_window == WINDOW
    assert progress.calls[-1][:3] == ("update", "sync-b", 7)
    assert sync_state.checkpoints == [cursor(page_token="p2", emails_processed=2, batches=1)]
    with pytest.raises(KeyError):
        run.parked(handle)


def test_a_batch_whose_checkpoint_finds_the_lease_taken_over_fails_and_is_not_counted():
    run, _, sync_state = make_run()
    held(run)
    handle = run.park(Batch(ids=["a"], window=WINDOW), [])
    sync_state.state = sync_state.state.model_copy(update={"active_sync_id": "sync-c"})
    with pytest.raises(LeaseHeldError, match="to sync sync-c"):
        run.record(handle.model_copy(update={"stored": True}), None)
    assert (run.summary.emails_processed, run.summary.batches) == (0, 0)
    assert run.parked(handle) == []  # kept: a retry stores it again


@pytest.mark.parametrize(
    ("exc", "text"),
    [
        (
            AuthorizationRevokedError(),
            "Gmail authorization revoked or expired: reconnect Gmail to resume syncing",
        ),
        (LeaseHeldError("lost"), "another sync took over: lost"),
        (RetriableError("503"), "Gmail or Firestore kept failing after retries: 503"),
        (KeyboardInterrupt(), "the sync was interrupted"),
        (ValueError("bad"), "ValueError: bad"),
        (ValueError(), "ValueError"),
    ],
)
def test_every_exception_becomes_one_readable_error(exc, text):
    assert describe_error(exc) == text


# ------------------------------------------------------------------------------------------ plans


def cursor(**changes: Any) -> BackfillCursor:
    return BackfillCursor(window_start=WINDOW.start, window_end=WINDOW.end, **changes)


def handle(cursor_after: BackfillCursor | None = None) -> Batch:
    return Batch(key="k", ids=["a"], emails_fetched=1, already_enriched=0, cursor_after=cursor_after)


def added(*ids: str, history_id: str = "1200") -> HistoryChanges:
    changes = [
        HistoryChange(kind="messageAdded", message_id=i, history_id=history_id, label_ids=["INBOX"])
        for i in ids
    ]
    return HistoryChanges(pages=[HistoryPage(changes=changes, history_id=history_id)], history_id=history_id)


class FakeCalls:
    def __init__(
        self,
        history: HistoryChanges | Exception | None = None,
        *,
        stored: dict[str, StoredState] | None = None,
        mailbox: dict[str, list[str]] | None = None,
    ) -> None:
        self.history = history
        self.stored = stored or {}
        self.mailbox = mailbox or {}
        self.calls: list[str] = []

    def stored_states(self, ids: list[str]) -> dict[str, StoredState]:
        self.calls.append("stored")
        return {i: self.stored[i] for i in ids if i in self.stored}

    def list_mailbox(self, after: datetime | None) -> dict[str, list[str]]:
        self.calls.append("mailbox")
        return self.mailbox

    def all_stored_states(self) -> dict[str, StoredState]:
        self.calls.append("all-stored")
        return self.stored

    def list_trash_and_spam(self, after: datetime | None) -> set[str]:
        self.calls.append("trash-and-spam")
        return {"ghost"}

    def list_history(self, start_history_id: str) -> HistoryChanges:
        self.calls.append(f"history:{start_history_id}")
        if isinstance(self.history, Exception):
            raise self.history
        assert self.history is not None
        return self.history

    def read_profile(self) -> GmailProfile:
        self.calls.append("profile")
        return GmailProfile(email_address="a@example.com", messages_total=250, history_id="900")

    def estimate_messages_since(self, bound: datetime) -> int:
        self.calls.append("estimate")
        return 30

    def find_backfill_start(
        self, now: datetime, bound: datetime | None, start_history_id: str
    ) -> BackfillCursor:
        self.calls.append(f"start:{start_history_id}")
        return cursor(start_history_id=start_history_id)

    def warm_up_enricher(self) -> None:
        self.calls.append("warm-up")


def planned(state: SyncState, calls: FakeCalls, lookback_weeks: int | None = None):
    run, progress, _ = make_run(FakeSyncState(state))
    held(run)
    plan = choose_plan(run, calls, lookback_weeks=lookback_weeks, batch_size=2, now=NOW)
    return plan, run, progress


def test_the_incremental_plan_batches_the_added_ids_and_moves_history_on():
    changes = added("a", "b", "c")
    plan, run, progress = planned(
        SyncState(backfill_completed=True, last_history_id="1000"), FakeCalls(changes)
    )
    assert isinstance(plan, IncrementalPlan) and run.summary.mode is SyncMode.INCREMENTAL
    assert progress.calls[-1] == ("start", "sync-b", SyncMode.INCREMENTAL, 3)
    first = plan.first_request()
    assert first is not None and first.ids == ["a", "b"]
    second = plan.request_after(handle())
    assert second is not None and second.ids == ["c"]
    assert plan.request_after(handle()) is None
    assert plan.checkpoint_after(handle(cursor())) is None
    assert plan.completion().model_dump() == {"history_id": "1200", "backfill_completed": False}


def test_an_idle_incremental_sync_costs_one_history_call_and_no_model_load():
    calls = FakeCalls(HistoryChanges(pages=[HistoryPage(history_id="1000")], history_id="1000"))
    plan, _, _ = planned(SyncState(backfill_completed=True, last_history_id="1000"), calls)
    assert calls.calls == ["history:1000"] and plan.first_request() is None


def test_a_fresh_backfill_walks_from_the_newest_week_and_follows_each_batch_cursor():
    calls = FakeCalls()
    plan, run, progress = planned(SyncState(), calls)
    assert isinstance(plan, BackfillPlan) and not run.summary.resumed
    assert calls.calls == ["warm-up", "profile", "start:900"]
    assert progress.calls[-1] == ("start", "sync-b", SyncMode.BACKFILL, 250)
    first = plan.first_request()
    assert first is not None and first.cursor == cursor(start_history_id="900") and first.bound is None
    after = cursor(page_token="p2")
    assert plan.request_after(handle(after)).cursor == after  # type: ignore[union-attr]
    assert plan.checkpoint_after(handle(after)) == after
    assert plan.request_after(handle(None)) is None and plan.checkpoint_after(handle(None)) is None
    assert plan.completion().model_dump() == {"history_id": "900", "backfill_completed": True}


def test_an_interrupted_backfill_resumes_at_its_checkpoint_with_its_counts_and_start_history():
    saved = cursor(page_token="p7", emails_processed=40, batches=4, start_history_id="500")
    calls = FakeCalls()
    plan, run, _ = planned(SyncState(backfill_cursor=saved), calls, lookback_weeks=4)
    assert run.summary.resumed and (run.summary.emails_processed, run.summary.batches) == (40, 4)
    assert calls.calls == ["warm-up", "profile", "estimate"]  # no new start: the checkpoint is it
    first = plan.first_request()
    assert first is not None and first.cursor == saved and first.bound is not None
    assert plan.completion().history_id == "500"


def test_expired_history_reconciles_with_a_listing_of_the_mailbox_instead_of_a_full_backfill():
    stored = {
        "kept": StoredState(label_ids=["INBOX"], enriched=True),
        "relabelled": StoredState(label_ids=["INBOX", "UNREAD"], enriched=True),
        "ghost": StoredState(label_ids=["INBOX"], enriched=True),
    }
    mailbox = {"kept": ["INBOX"], "relabelled": ["INBOX"], "new": ["INBOX", "UNREAD"]}
    calls = FakeCalls(HistoryExpiredError("404"), stored=stored, mailbox=mailbox)
    plan, run, _ = planned(SyncState(backfill_completed=True, last_history_id="1"), calls)
    assert isinstance(plan, ReconcilePlan) and run.summary.fell_back_to_backfill and run.summary.reconciled
    assert run.summary.mode is SyncMode.BACKFILL
    # the profile first: changes made while the mailbox is listed are in the history after it
    assert calls.calls[:4] == ["history:1", "profile", "mailbox", "all-stored"]
    request = plan.first_request()
    assert request is not None and request.step is not None
    ops = request.step.ops
    assert (
        ops.fetch == ["new"] and ops.set_labels == {"relabelled": ["INBOX"]} and list(ops.leave) == ["ghost"]
    )
    assert plan.request_after(handle()) is None
    assert plan.completion().model_dump() == {"history_id": "900", "backfill_completed": False}
