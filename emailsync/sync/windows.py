"""Weekly backfill windows, newest first, jumping over empty stretches, bounded by the look-back.

A backfill walks the mailbox one week at a time from the newest message backwards. A window is the
half-open interval `[start, end)`; its top is placed just after the newest message not yet walked, so a
mailbox with a ten-year gap costs one "what is the next older message?" call instead of 520 empty weeks.
Boundaries are whole seconds because Gmail's `after:`/`before:` search operators take epoch seconds.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from emailsync.models import SyncWindow

WEEK = timedelta(weeks=1)
ONE_SECOND = timedelta(seconds=1)
# The first "newest message before" probe looks this far ahead of the sync start: mail with a clock-skewed
# future date still belongs to the mailbox and must be walked.
FUTURE_SKEW = timedelta(days=366)


def as_utc(moment: datetime) -> datetime:
    """`moment` as an aware UTC datetime (naive values are taken to be UTC already)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def floor_to_second(moment: datetime) -> datetime:
    return as_utc(moment).replace(microsecond=0)


def lookback_bound(now: datetime, lookback_weeks: int | None) -> datetime | None:
    """The oldest instant a backfill looks at, or None for the whole mailbox."""
    if lookback_weeks is None:
        return None
    if lookback_weeks <= 0:
        raise ValueError(f"lookback_weeks must be positive, got {lookback_weeks}")
    return floor_to_second(now - lookback_weeks * WEEK)


def first_probe_before(now: datetime) -> datetime:
    """Where the walk asks for the newest message of the whole mailbox."""
    return floor_to_second(now) + FUTURE_SKEW


def window_for_newest(
    newest: datetime | None, *, older_than: datetime | None = None, bound: datetime | None = None
) -> SyncWindow | None:
    """The week window whose top sits just after `newest`, the newest message not walked yet.

    `older_than` is the start of the window walked before (the new window never overlaps it) and `bound`
    the look-back limit (the window never reaches below it). None means the walk is over: there is no
    older message, or it lies beyond the look-back.
    """
    if newest is None:
        return None
    newest = as_utc(newest)
    if bound is not None and newest < bound:
        return None
    end = floor_to_second(newest) + ONE_SECOND
    if older_than is not None:
        end = min(end, floor_to_second(older_than))
    start = end - WEEK
    if bound is not None:
        start = max(start, bound)
    if start >= end:  # only reachable with inconsistent inputs (newest not older than `older_than`)
        return None
    return SyncWindow(start=start, end=end)


def weeks_spanned(newest: datetime, oldest: datetime) -> int:
    """How many weekly windows a walk without jumps would have listed between two messages."""
    span = as_utc(newest) - as_utc(oldest)
    return int(span / WEEK) + 1
