"""A Gmail account's life after connect: revoked grants (`needsReauth`), disconnects, purges.

- `rules.automatic_sync_blocked`: the one rule every automatic trigger (sweep, schedule, watcher
  catch-up, push) asks before starting a sync.
- `guard.ConnectionGuard`: what a running sync does about its user's connection (stop at a batch
  boundary on disconnect, set `needsReauth` on a revoked grant, clear it after a sync that worked).
- `purge.purge_provider_user`: `EMAILSYNC_ON_DISCONNECT=purge`, in bounded, resumable batches.
"""

from emailsync.lifecycle.guard import ConnectionGuard
from emailsync.lifecycle.purge import PurgeSummary, pending_purges, purge_provider_user, request_purge
from emailsync.lifecycle.rules import automatic_sync_blocked

__all__ = [
    "ConnectionGuard",
    "PurgeSummary",
    "automatic_sync_blocked",
    "pending_purges",
    "purge_provider_user",
    "request_purge",
]
