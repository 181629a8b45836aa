"""What one sync did: returned by the `email_sync` flow and stored (in part) in `syncProgress.details`."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from emailsync.models import SyncMode, SyncTrigger, SyncWindow

if TYPE_CHECKING:
    from emailsync.gmail.types import ClientStats


class SyncTimings(BaseModel):
    """Seconds spent, to tell the quota, enrichment, storage and orchestration costs apart."""

    wall_seconds: float = 0.0  # from lease taken to sync finished
    fetch_seconds: float = 0.0  # listing + getting messages (bound by the Gmail quota)
    enrich_seconds: float = 0.0
    store_seconds: float = 0.0  # Firestore writes: emails, checkpoint, lease, progress
    parse_seconds: float = 0.0
    orchestration_seconds: float = 0.0  # task-run time outside the domain calls (Prefect's overhead)


class SyncSummary(BaseModel):
    sync_id: str
    provider_user_id: str
    trigger: SyncTrigger = SyncTrigger.MANUAL
    mode: SyncMode | None = None
    skipped: bool = False
    active_sync_id: str | None = None  # the sync holding the lease when this one was skipped
    resumed: bool = False  # the backfill continued from a checkpoint
    fell_back_to_backfill: bool = False  # incremental history had expired
    reconciled: bool = False  # ... so the mirror was compared with a fresh listing of the mailbox
    labels_updated: int = 0  # emails whose labels changed (no download, no enrichment)
    emails_removed: int = 0  # emails that left the mirror (trash, spam, deleted): removed or tombstoned
    emails_processed: int = 0  # listed and handled in this sync (resumed counts included)
    emails_total_estimate: int | None = None
    emails_fetched: int = 0
    emails_stored: int = 0
    emails_enriched: int = 0
    parse_errors: int = 0  # messages stored with at least one parse error
    batches: int = 0
    current_window: SyncWindow | None = None
    tag_counts: dict[str, int] = Field(default_factory=dict)
    flow_run_id: str | None = None
    attempt: int = 1  # runs of this sync id: > 1 when a failed or crashed run was retried
    error: str | None = None  # the readable cause when the sync failed
    gmail_calls: int = 0  # Gmail API calls (each batch part counts)
    gmail_retries: int = 0  # calls sent again after a 429, 5xx or transport error
    gmail_rate_limited: int = 0  # calls answered 429 / rateLimitExceeded
    gmail_server_errors: int = 0  # calls answered 5xx or failing in transport
    emails_vanished: int = 0  # listed, but deleted before they could be downloaded (404)
    emails_skipped: int = 0  # listed, not downloaded again: already stored and enriched earlier
    timings: SyncTimings = Field(default_factory=SyncTimings)

    def count_gmail(self, stats: ClientStats) -> None:
        self.gmail_calls = stats.calls
        self.gmail_retries = stats.retries
        self.gmail_rate_limited = stats.rate_limited
        self.gmail_server_errors = stats.server_errors
        self.emails_vanished = stats.not_found

    def add_tags(self, tag_counts: dict[str, int]) -> None:
        merged = Counter(self.tag_counts)
        merged.update(tag_counts)
        self.tag_counts = dict(merged.most_common())

    def progress_details(self) -> dict[str, Any]:
        """The `syncProgress.details` of a finished sync (ProgressWriter keyword names)."""
        return {
            "mode": self.mode,
            "emails_processed": self.emails_processed,
            "emails_total_estimate": self.emails_total_estimate,
            "batches": self.batches,
            "current_window": self.current_window,
            "flow_run_id": self.flow_run_id,
            "emails_stored": self.emails_stored,
            "emails_enriched": self.emails_enriched,
            "parse_errors": self.parse_errors,
            "tags": dict(list(self.tag_counts.items())[:20]),
            "resumed": self.resumed,
            "fell_back_to_backfill": self.fell_back_to_backfill,
            "reconciled": self.reconciled,
            "labels_updated": self.labels_updated,
            "emails_removed": self.emails_removed,
        }
