"""The per-batch work of a sync, without orchestration: fetch → parse → enrich → store → checkpoint.

`SyncSession` holds what one sync talks to (Gmail, Firestore repositories, the progress writer, the
enricher) and exposes each step as a plain method, so Prefect tasks stay thin wrappers and every step
can be timed apart from the orchestration around it. Within a batch, email writes run on a background
writer while the next chunk is enriched (`emailsync.sync.writer`); the batch's checkpoint still follows
its last write.
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from emailsync.config import get_settings
from emailsync.enrichment import Enricher, EnrichmentInput
from emailsync.errors import LeaseHeldError
from emailsync.models import BackfillCursor, EmailRecord, EnrichmentInfo, SyncWindow
from emailsync.sync.backfill import PlannedBatch, plan_next_batch
from emailsync.sync.mirror import MirrorOps, MirrorStep, is_mirrored
from emailsync.sync.progress_math import monotone_percent, percent_complete
from emailsync.sync.writer import BackgroundEmailWriter

if TYPE_CHECKING:
    from emailsync.firestore.progress import ProgressWriter
    from emailsync.firestore.repositories import EmailRepository, SyncStateRepository
    from emailsync.gmail.client import GmailClient
    from emailsync.gmail.types import GmailMessage

# A batch is enriched and handed to the background writer in chunks of this size, so its writes
# overlap the enrichment of the next chunk (a batch of 100: two chunks; chunks of 25 encoded ~7% slower).
STORE_CHUNK_SIZE = 50


class FetchedBatch(BaseModel):
    """Messages of one batch as downloaded; ids already stored with an enrichment are not downloaded."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    ids: list[str]
    messages: list[Any] = Field(default_factory=list)  # GmailMessage, in the order of `ids`
    already_enriched: int = 0
    window: SyncWindow | None = None
    cursor_after: BackfillCursor | None = None  # backfill only: where the walk continues after this batch
    list_calls: int = 0
    fetch_seconds: float = 0.0
    ops: MirrorOps | None = None  # mirror batches (history, reconcile): what to do besides storing
    history_id_after: str | None = None  # mirror batches: lastHistoryId once this batch is applied


class ProgressPoint(BaseModel):
    """Counts of a sync before a batch: what the progress percentage and checkpoint are computed from."""

    emails_processed: int = 0
    batches: int = 0
    total_estimate: int | None = None
    percent: int = 0


class Batch(BaseModel):
    """One batch of a sync as it travels through Prefect futures: a handle on the messages, not the
    messages, and once stored, what storing it did.

    Prefect keeps every task result of a flow run in memory for dependency tracking; handing over the
    raw messages themselves would keep a whole mailbox alive until the flow run ends. The messages wait
    in the `SyncRun` (`park` / `parked`) until the batch is stored.
    """

    key: str
    emails_in_batch: int
    emails_fetched: int
    already_enriched: int
    window: SyncWindow | None = None
    cursor_after: BackfillCursor | None = None
    list_calls: int = 0
    fetch_seconds: float = 0.0
    history_id_after: str | None = None
    # what storing it did (`SyncSession.store_batch` / `finish_batch` fill these in), and the counts after it
    stored: bool = False
    emails_stored: int = 0
    emails_enriched: int = 0
    parse_errors: int = 0  # messages stored with at least one parse error
    labels_updated: int = 0
    emails_removed: int = 0
    tag_counts: dict[str, int] = Field(default_factory=dict)
    progress: ProgressPoint | None = None
    parse_seconds: float = 0.0
    enrich_seconds: float = 0.0
    # email writes (on the background writer, overlapping enrichment) + checkpoint + lease + progress write
    store_seconds: float = 0.0
    # the time storing took end to end, which the overlap makes less than parse + enrich + store
    wall_seconds: float = 0.0

    @classmethod
    def of(cls, key: str, fetched: FetchedBatch) -> Batch:
        return cls(
            key=key,
            emails_in_batch=len(fetched.ids),
            emails_fetched=len(fetched.messages),
            already_enriched=fetched.already_enriched,
            window=fetched.window,
            cursor_after=fetched.cursor_after,
            list_calls=fetched.list_calls,
            fetch_seconds=fetched.fetch_seconds,
            history_id_after=fetched.history_id_after,
        )


class SyncSession:
    """Everything one sync of one provider user works with."""

    def __init__(
        self,
        *,
        sync_id: str,
        provider_user_id: str,
        app_user_id: str,
        family_id: str | None,
        gmail: GmailClient,
        emails: EmailRepository,
        sync_state: SyncStateRepository,
        progress: ProgressWriter,
        enricher: Enricher,
        lease_timeout_seconds: float,
        deleted_mail: str | None = None,
    ) -> None:
        self.sync_id = sync_id
        self.provider_user_id = provider_user_id
        self.app_user_id = app_user_id
        self.family_id = family_id
        self.gmail = gmail
        self.emails = emails
        self.sync_state = sync_state
        self.progress = progress
        self.enricher = enricher
        self.lease_timeout_seconds = lease_timeout_seconds
        # remove | keep (EMAILSYNC_DELETED_MAIL): what mail that leaves the mailbox leaves behind
        self.keep_deleted_mail = (deleted_mail or get_settings().deleted_mail) == "keep"

    # ------------------------------------------------------------------------------------ fetch

    def fetch_backfill_batch(
        self, cursor: BackfillCursor, *, batch_size: int, bound: datetime | None
    ) -> FetchedBatch:
        started = time.perf_counter()
        plan: PlannedBatch = plan_next_batch(self.gmail, cursor, batch_size=batch_size, bound=bound)
        fetched = self._download(plan.ids)
        fetched.window = plan.window
        fetched.cursor_after = plan.cursor_after
        fetched.list_calls = plan.list_calls + plan.jumps
        fetched.fetch_seconds = time.perf_counter() - started
        return fetched

    def fetch_ids(self, ids: list[str]) -> FetchedBatch:
        started = time.perf_counter()
        fetched = self._download(ids)
        fetched.fetch_seconds = time.perf_counter() - started
        return fetched

    def fetch_mirror_batch(self, step: MirrorStep) -> FetchedBatch:
        """Download the messages a mirror batch needs (new ones, or back without a stored enrichment)."""
        started = time.perf_counter()
        fetch = step.ops.fetch
        messages = self.gmail.get_messages(fetch) if fetch else []
        return FetchedBatch(
            ids=step.ops.ids,
            messages=messages,
            ops=step.ops,
            history_id_after=step.history_id,
            fetch_seconds=time.perf_counter() - started,
        )

    def _download(self, ids: list[str]) -> FetchedBatch:
        # A rerun (resume, retried batch, overlapping history) must not spend quota or enrichment twice.
        done = self.emails.enriched_ids(self.provider_user_id, ids) if ids else set()
        wanted = [message_id for message_id in ids if message_id not in done]
        messages = self.gmail.get_messages(wanted) if wanted else []
        return FetchedBatch(ids=ids, messages=messages, already_enriched=len(done))

    # ------------------------------------------------------------------------------------ store

    def store_batch(self, batch: Batch, fetched: FetchedBatch, before: ProgressPoint) -> Batch:
        """Parse, enrich and store one fetched batch (progress and checkpoint follow in `finish_batch`).

        Chunk by chunk: while the background writer stores one chunk, the next is enriched.
        Returns only once every email of the batch is stored; a failed write fails the batch."""
        started = time.perf_counter()
        records = [self._record(message) for message in fetched.messages]
        # Trashed or marked spam between listing and download: not part of the mirror.
        outside = {r.message_id: r.label_ids for r in records if not is_mirrored(r.label_ids)}
        records = [record for record in records if record.message_id not in outside]
        kept = self._reuse_kept_enrichments(records) if fetched.ops is not None else set()
        parsed_at = time.perf_counter()
        tag_counts: Counter[str] = Counter()
        with BackgroundEmailWriter(self.emails, self.provider_user_id) as writer:
            for offset in range(0, len(records), STORE_CHUNK_SIZE):
                chunk = records[offset : offset + STORE_CHUNK_SIZE]
                tag_counts.update(self._enrich([r for r in chunk if r.message_id not in kept]))
                writer.submit(chunk)
            enriched_at = time.perf_counter()
            stored = writer.wait()
        labels_updated, removed = self._apply_ops(fetched.ops, outside, restored=kept)
        processed = before.emails_processed + len(fetched.ids)
        batches = before.batches + 1
        percent = monotone_percent(
            before.percent, percent_complete(processed, before.total_estimate, batches)
        )
        return batch.model_copy(
            update=dict(
                stored=True,
                emails_stored=stored,
                emails_enriched=len(records) - len(kept),
                labels_updated=labels_updated,
                emails_removed=removed,
                parse_errors=sum(1 for record in records if record.parse_errors),
                tag_counts=dict(tag_counts),
                progress=ProgressPoint(
                    emails_processed=processed,
                    batches=batches,
                    total_estimate=before.total_estimate,
                    percent=percent,
                ),
                parse_seconds=parsed_at - started,
                enrich_seconds=enriched_at - parsed_at,
                store_seconds=writer.busy_seconds,
                wall_seconds=time.perf_counter() - started,
            )
        )

    def _reuse_kept_enrichments(self, records: list[EmailRecord]) -> set[str]:
        """Messages back from the trash or spam whose enrichment was kept aside: it is theirs again."""
        kept = self.emails.kept_enrichments(self.provider_user_id, [r.message_id for r in records])
        for record in records:
            data = kept.get(record.message_id)
            if data is None:
                continue
            embedding = data.get("embedding")
            record.summary = data.get("summary")
            record.tags = list(data.get("tags") or [])
            record.embedding = [float(value) for value in embedding] if embedding is not None else None
            record.enrichment = EnrichmentInfo.from_firestore(data.get("enrichment"))
        return set(kept)

    def _apply_ops(
        self, ops: MirrorOps | None, outside: dict[str, list[str]], *, restored: set[str]
    ) -> tuple[int, int]:
        """The rest of a mirror batch once its downloads are stored: labels, departures, deletions."""
        keep, user = self.keep_deleted_mail, self.provider_user_id
        leaving: dict[str, list[str] | None] = dict(outside)
        labels_updated = 0
        if ops is not None:
            labels_updated = self.emails.set_labels(user, ops.set_labels) if ops.set_labels else 0
            leaving.update(ops.leave)
        removed = self.emails.leave(user, leaving, keep=keep, for_good=False) if leaving else 0
        if ops is not None and ops.delete:
            removed += self.emails.leave(user, dict.fromkeys(ops.delete), keep=keep, for_good=True)
        if restored:
            self.emails.drop_kept_enrichments(user, restored)
        return labels_updated, removed

    def _enrich(self, records: list[EmailRecord]) -> Counter[str]:
        """Fill in summary, tags and embedding of `records`; the tags given, counted."""
        tag_counts: Counter[str] = Counter()
        if not records:
            return tag_counts
        enrichments = self.enricher.enrich(
            [
                EnrichmentInput(
                    message_id=record.message_id,
                    subject=record.subject,
                    sender=record.sender,
                    body_text=record.body_text,
                )
                for record in records
            ]
        )
        info = EnrichmentInfo(model=self.enricher.model_name, enriched_at=datetime.now(UTC))
        for record, enrichment in zip(records, enrichments, strict=True):
            record.summary = enrichment.summary
            record.tags = enrichment.tags
            record.embedding = enrichment.embedding
            record.enrichment = info
            tag_counts.update(enrichment.tags)
        return tag_counts

    def _record(self, message: GmailMessage) -> EmailRecord:
        return EmailRecord(
            **message.parse().model_dump(), app_user_id=self.app_user_id, family_id=self.family_id
        )

    # ------------------------------------------------------------------------------------ after storing

    def finish_batch(self, batch: Batch, cursor_after: BackfillCursor | None) -> Batch:
        """Report progress, then checkpoint: save where the backfill resumes (when `cursor_after` is
        given) and renew the lease. Fails with LeaseHeldError when another sync took the lease over."""
        started = time.perf_counter()
        point = batch.progress
        assert point is not None, "finish_batch follows store_batch"
        self.progress.update(
            self.sync_id,
            point.percent,
            emails_processed=point.emails_processed,
            emails_total_estimate=point.total_estimate,
            batches=point.batches,
            current_window=batch.window,
        )
        cursor = (
            None
            if cursor_after is None
            else cursor_after.model_copy(
                update={"emails_processed": point.emails_processed, "batches": point.batches}
            )
        )
        if not self.sync_state.checkpoint(
            self.provider_user_id,
            self.sync_id,
            cursor,
            self.lease_timeout_seconds,
            history_id=batch.history_id_after,
        ):
            self._lost_lease()
        finished = time.perf_counter() - started
        batch.store_seconds += finished
        batch.wall_seconds += finished
        return batch

    def save_start(self, cursor: BackfillCursor) -> None:
        """Checkpoint a new backfill's first cursor before any batch is stored. A sync killed after
        storing mail but before its first checkpoint then resumes with the same start historyId, and the
        catch-up after the backfill still applies the changes made to what it had stored."""
        if not self.sync_state.checkpoint(
            self.provider_user_id, self.sync_id, cursor, self.lease_timeout_seconds
        ):
            self._lost_lease()

    def _lost_lease(self) -> None:
        active = self.sync_state.get(self.provider_user_id).active_sync_id
        raise LeaseHeldError(
            f"sync {self.sync_id} lost its lease on provider user {self.provider_user_id} "
            f"to sync {active} (presumed dead after {self.lease_timeout_seconds:g}s without renewal)"
        )
