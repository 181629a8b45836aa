"""Whether one `providerUsers` change starts a sync: the watcher's decision as a pure function.

The subscription (`deployments/watcher.py`) feeds it the change and what it knows; the two reads a
catch-up may need (the user's sync state, their pending progress documents) are passed as callables
and called only when the decision depends on them, so a plain connect costs no read at all.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel

from emailsync.models import SyncProgress, SyncState

ChangeKind = Literal["ADDED", "MODIFIED", "REMOVED"]


class ConnectDecision(BaseModel):
    action: Literal["start", "skip", "disconnected"]
    reason: str


def decide_connect(
    kind: ChangeKind | str,
    *,
    connect_key: str | None,
    handled_key: str | None,
    catch_up: bool,
    after_gap: bool,
    state: Callable[[], SyncState],
    pending: Callable[[], list[SyncProgress]],
    now: datetime,
    stale_pending_after: timedelta,
    blocked: str | None = None,
) -> ConnectDecision:
    """ADDED = a connect (active turned true), REMOVED = a disconnect, MODIFIED = an unrelated update.

    `catch_up`: the first snapshot after (re)subscribing; `after_gap`: that snapshot follows a stream
    error (not the watcher's start). `blocked`: why no automatic trigger may sync this user
    (`emailsync.lifecycle.automatic_sync_blocked`; for a connected user: the grant was revoked or
    expired, `needsReauth`): then only a reconnect — active turning true, or a new `connectedAt` while
    active (the app stored a new credential) — starts a sync, never a catch-up."""
    if kind == "REMOVED":
        return ConnectDecision(
            action="disconnected", reason="Gmail disconnected; a reconnect starts a new sync"
        )
    if kind == "MODIFIED":
        if blocked and connect_key is not None and connect_key != handled_key:
            return ConnectDecision(action="start", reason="Gmail reconnected after a revoked grant")
        # Still connected: an unrelated update (or active written true again) is not a connect.
        return ConnectDecision(action="skip", reason="update of an already connected user, not a connect")
    if handled_key is not None and handled_key == connect_key:
        return ConnectDecision(action="skip", reason="this connect was already handled (re-delivered event)")
    if not catch_up:
        return ConnectDecision(action="start", reason="Gmail connected")
    if blocked and not after_gap:
        # Connected long ago, grant revoked since: the periodic sync leaves them alone too.
        return ConnectDecision(action="skip", reason=f"catch-up: {blocked}")
    if after_gap:
        # Re-subscribed after a stream error: this connect happened while we were not listening.
        reason = live_sync_reason(state(), pending, now=now, stale_pending_after=stale_pending_after)
        why = "connected while the listener was re-subscribing"
    else:
        # First snapshot after start: the user may have connected long ago (restart catch-up).
        reason = catch_up_skip_reason(state(), pending, now=now, stale_pending_after=stale_pending_after)
        why = "catch-up: connected, no completed backfill, no live sync"
    if reason is None:
        return ConnectDecision(action="start", reason=why)
    return ConnectDecision(action="skip", reason=reason)


def catch_up_skip_reason(
    state: SyncState,
    pending: Callable[[], list[SyncProgress]],
    *,
    now: datetime,
    stale_pending_after: timedelta,
) -> str | None:
    if state.backfill_completed:
        return "catch-up: backfill already completed (the periodic sync keeps it fresh)"
    return live_sync_reason(state, pending, now=now, stale_pending_after=stale_pending_after)


def live_sync_reason(
    state: SyncState,
    pending: Callable[[], list[SyncProgress]],
    *,
    now: datetime,
    stale_pending_after: timedelta,
) -> str | None:
    """Why a sync of this user is already under way (a live lease, a recent pending document), or None."""
    if state.active_sync_id and state.lease_expires_at and state.lease_expires_at > now:
        return f"sync {state.active_sync_id} holds a live lease"
    for progress in pending():
        # A pending doc older than this has no flow behind it (e.g. we died between the two steps).
        if now - progress.updatedAt < stale_pending_after:
            return f"sync {progress.syncId} is pending"
    return None
