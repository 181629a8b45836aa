"""Pending `syncProgress` documents whose flow run never started: found here, failed by the one writer
(`ProgressWriter.fail_stale_pending`, which the watcher's supervisor calls)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter

from emailsync.models import SyncProgress, SyncStatus


def stale_pending_ids(client: firestore.Client, cutoff: datetime) -> Iterator[str]:
    """Sync ids of the pending documents not touched since `cutoff` (`updatedAt`: a reopened document
    restarts the clock)."""
    # Equality only (no composite index): pending documents are few.
    query = client.collection(SyncProgress.COLLECTION).where(
        filter=FieldFilter("status", "==", SyncStatus.PENDING.value)
    )
    for snapshot in query.stream():
        updated = (snapshot.to_dict() or {}).get("updatedAt")
        if isinstance(updated, datetime) and updated <= cutoff:
            yield snapshot.id


def start_timeout_reason(timeout_seconds: float) -> str:
    """The `error` of a sync that was never started."""
    return (
        f"the sync did not start within {timeout_seconds:.0f} s of being requested "
        "(no worker picked up its flow run); a new trigger starts a new sync"
    )
