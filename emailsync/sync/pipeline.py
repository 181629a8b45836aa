"""The per-batch work of a sync, without orchestration: fetch → parse → enrich → store.

`SyncSession` holds what one sync talks to (Gmail, the emails repository, the enricher) and exposes each
step as a plain method, so Prefect tasks stay thin wrappers and every step can be timed apart from the
orchestration around it. A fetch answers the `Batch` and its downloaded messages (which the `SyncRun`
parks); storing answers the batch with what storing did. Within a batch, email writes run on a
background writer while the next chunk is enriched (`emailsync.sync.writer`); the batch's progress and
checkpoint (`SyncRun.record`) follow its last write.
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from emailsync.config import get_settings
from emailsync.enrichment import Enricher, EnrichmentInput
from emailsync.models import BackfillCursor, EmailRecord, EnrichmentInfo
from emailsync.sync.backfill import plan_next_batch
from emailsync.sync.batch import Batch
from emailsync.sync.mirror import MirrorOps, MirrorStep, is_mirrored
from emailsync.sync.writer import BackgroundEmailWriter

if TYPE_CHECKING:
    from emailsync.firestore.emails import EmailRepository
    from emailsync.gmail.client import GmailClient
    from emailsync.gmail.types import GmailMessage

# A batch is enriched and handed to the background writer in chunks of this size, so its writes
# overlap the enrichment of the next chunk (a batch of 100: two chunks; chunks of 25 encoded ~7% slower).
STORE_CHUNK_SIZE = 50


# A fetched batch and its downloaded messages (GmailMessage, in the order of the batch's ids).
Fetched = tuple[Batch, list["GmailMessage"]]


class SyncSession:
    """Everything one sync of one provider user works with."""

    def __init__(
        self,
        *,
        provider_user_id: str,
        app_user_id: str,
        family_id: str | None,
        gmail: GmailClient,
        emails: EmailRepository,
        enricher: Enricher,
        deleted_mail: str | None = None,
    ) -> None:
        self.provider_user_id = provider_user_id
        self.app_user_id = app_user_id
        self.family_id = family_id
        self.gmail = gmail
        self.emails = emails
        self.enricher = enricher
        # remove | keep (EMAILSYNC_DELETED_MAIL): what mail that leaves the mailbox leaves behind
        self.keep_deleted_mail = (deleted_mail or get_settings().deleted_mail) == "keep"

    # ------------------------------------------------------------------------------------ fetch

    def fetch_backfill_batch(
        self, cursor: BackfillCursor, *, batch_size: int, bound: datetime | None
    ) -> Fetched:
        """The next batch of the backfill walk from `cursor`, and its messages not stored yet."""
        started = time.perf_counter()
        batch = plan_next_batch(self.gmail, cursor, batch_size=batch_size, bound=bound)
        return self._download(batch, started)

    def fetch_ids(self, ids: list[str]) -> Fetched:
        return self._download(Batch(ids=ids), time.perf_counter())

    def fetch_mirror_batch(self, step: MirrorStep) -> Fetched:
        """Download the messages a mirror batch needs (new ones, or back without a stored enrichment)."""
        started = time.perf_counter()
        fetch = step.ops.fetch
        messages = self.gmail.get_messages(fetch) if fetch else []
        batch = Batch(ids=step.ops.ids, ops=step.ops, history_id_after=step.history_id)
        return self._fetched(batch, messages, started)

    def _download(self, batch: Batch, started: float) -> Fetched:
        # A rerun (resume, retried batch, overlapping history) must not spend quota or enrichment twice.
        ids = batch.ids
        done = self.emails.enriched_ids(self.provider_user_id, ids) if ids else set()
        wanted = [message_id for message_id in ids if message_id not in done]
        messages = self.gmail.get_messages(wanted) if wanted else []
        batch.already_enriched = len(done)
        return self._fetched(batch, messages, started)

    @staticmethod
    def _fetched(batch: Batch, messages: list[GmailMessage], started: float) -> Fetched:
        batch.emails_fetched = len(messages)
        batch.fetch_seconds = time.perf_counter() - started
        return batch, messages

    # ------------------------------------------------------------------------------------ store

    def store_batch(self, batch: Batch, messages: list[GmailMessage]) -> Batch:
        """Parse, enrich and store one fetched batch (progress and checkpoint follow: `SyncRun.record`).

        Chunk by chunk: while the background writer stores one chunk, the next is enriched.
        Returns only once every email of the batch is stored; a failed write fails the batch."""
        started = time.perf_counter()
        records = [self._record(message) for message in messages]
        # Trashed or marked spam between listing and download: not part of the mirror.
        outside = {r.message_id: r.label_ids for r in records if not is_mirrored(r.label_ids)}
        records = [record for record in records if record.message_id not in outside]
        kept = self._reuse_kept_enrichments(records) if batch.ops is not None else set()
        parsed_at = time.perf_counter()
        tag_counts: Counter[str] = Counter()
        with BackgroundEmailWriter(self.emails, self.provider_user_id) as writer:
            for offset in range(0, len(records), STORE_CHUNK_SIZE):
                chunk = records[offset : offset + STORE_CHUNK_SIZE]
                tag_counts.update(self._enrich([r for r in chunk if r.message_id not in kept]))
                writer.submit(chunk)
            enriched_at = time.perf_counter()
            stored = writer.wait()
        labels_updated, removed = self._apply_ops(batch.ops, outside, restored=kept)
        return batch.model_copy(
            update=dict(
                stored=True,
                emails_stored=stored,
                emails_enriched=len(records) - len(kept),
                labels_updated=labels_updated,
                emails_removed=removed,
                parse_errors=sum(1 for record in records if record.parse_errors),
                tag_counts=dict(tag_counts),
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
