"""The watcher's connect decision, without Firestore: which providerUsers change starts a sync."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from deployments.connect_decision import decide_connect
from emailsync.lifecycle import automatic_sync_blocked
from emailsync.models import ProviderUser, SyncProgress, SyncState

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
STALE = timedelta(minutes=10)


def pending_doc(age: timedelta) -> SyncProgress:
    return SyncProgress(
        syncId="sync-p",
        appUserId="app",
        familyId=None,
        providerUserId="pu",
        type="email",
        status="pending",
        progress=0,
        error=None,
        startedAt=NOW - age,
        updatedAt=NOW - age,
        details={},
    )


def decide(
    kind="ADDED",
    *,
    state=None,
    pending=(),
    handled=None,
    catch_up=False,
    after_gap=False,
    reads=None,
    blocked=None,
):
    reads = [] if reads is None else reads

    def read_state():
        reads.append("state")
        return state or SyncState()

    def read_pending():
        reads.append("pending")
        return list(pending)

    return decide_connect(
        kind,
        connect_key="k1",
        handled_key=handled,
        catch_up=catch_up,
        after_gap=after_gap,
        state=read_state,
        pending=read_pending,
        now=NOW,
        stale_pending_after=STALE,
        blocked=blocked,
    )


def test_a_live_connect_starts_a_sync_without_reading_anything():
    reads: list[str] = []
    decision = decide(reads=reads)
    assert (decision.action, decision.reason) == ("start", "Gmail connected") and reads == []


@pytest.mark.parametrize(
    ("kind", "handled", "action", "reason"),
    [
        ("REMOVED", None, "disconnected", "Gmail disconnected; a reconnect starts a new sync"),
        ("MODIFIED", None, "skip", "update of an already connected user, not a connect"),
        ("ADDED", "k1", "skip", "this connect was already handled (re-delivered event)"),
    ],
)
def test_disconnects_updates_and_redelivered_connects_start_nothing(kind, handled, action, reason):
    decision = decide(kind, handled=handled)
    assert (decision.action, decision.reason) == (action, reason)


def test_catch_up_skips_a_user_whose_backfill_is_complete_without_reading_pending_docs():
    reads: list[str] = []
    decision = decide(state=SyncState(backfill_completed=True), catch_up=True, reads=reads)
    assert decision.action == "skip" and "backfill already completed" in decision.reason
    assert reads == ["state"]


def test_catch_up_skips_a_live_lease_or_a_recent_pending_doc_but_not_a_stale_one():
    live = SyncState(active_sync_id="sync-a", lease_expires_at=NOW + timedelta(minutes=1))
    assert decide(state=live, catch_up=True).reason == "sync sync-a holds a live lease"
    recent = decide(pending=[pending_doc(timedelta(minutes=1))], catch_up=True)
    assert (recent.action, recent.reason) == ("skip", "sync sync-p is pending")
    stale = decide(pending=[pending_doc(timedelta(hours=1))], catch_up=True)
    assert (stale.action, stale.reason) == (
        "start",
        "catch-up: connected, no completed backfill, no live sync",
    )


def test_after_a_stream_gap_a_completed_backfill_does_not_stop_a_reconnect():
    decision = decide(state=SyncState(backfill_completed=True), catch_up=True, after_gap=True)
    assert (decision.action, decision.reason) == ("start", "connected while the listener was re-subscribing")


REAUTH = automatic_sync_blocked(
    ProviderUser(app_user_id="a", email="e", services={"gmail": {"active": True, "needsReauth": True}})
)


def test_the_one_rule_leaves_users_alone_who_are_disconnected_or_must_reconnect():
    def user(**gmail):
        return ProviderUser(app_user_id="a", email="e", services={"gmail": gmail})

    assert automatic_sync_blocked(user(active=True)) is None
    assert automatic_sync_blocked(user(active=False)) == "Gmail is not connected"
    assert automatic_sync_blocked(None) == "Gmail is not connected"
    assert REAUTH is not None and "reconnect Gmail" in REAUTH


def test_catch_up_leaves_a_user_with_a_revoked_grant_alone_without_reading_anything():
    reads: list[str] = []
    decision = decide(catch_up=True, blocked=REAUTH, reads=reads)
    assert (decision.action, decision.reason) == ("skip", f"catch-up: {REAUTH}") and reads == []


def test_a_reconnect_of_a_user_with_a_revoked_grant_starts_a_sync():
    # active turned true again
    assert decide("ADDED", blocked=REAUTH).action == "start"
    # or a new connectedAt while active stayed true (the app stored a new credential)
    reconnect = decide("MODIFIED", handled="k0", blocked=REAUTH)
    assert (reconnect.action, reconnect.reason) == ("start", "Gmail reconnected after a revoked grant")
    # the flag being set (same connectedAt) is no reconnect
    assert decide("MODIFIED", handled="k1", blocked=REAUTH).action == "skip"


def test_a_reconnect_made_while_no_watcher_saw_it_lifts_the_block():
    def user(connected_at):
        gmail = {"active": True, "needsReauth": True, "needsReauthSince": NOW, "connectedAt": connected_at}
        return ProviderUser(app_user_id="a", email="e", services={"gmail": gmail})

    assert automatic_sync_blocked(user(NOW - timedelta(days=3))) == REAUTH  # connected before the revoke
    assert automatic_sync_blocked(user(NOW + timedelta(minutes=5))) is None  # connected again since
