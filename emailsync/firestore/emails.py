"""`providerUsers/{providerUserId}/emails/{gmailMessageId}`: the stored mirror of one user's mailbox.

How an `EmailRecord` is stored (camelCase fields, the embedding as a Firestore `Vector`), batched
upserts within the commit limits, the enrichment check a download skips on, counts and the vector
search. The mirror's own writes (labels, departures, kept enrichments) are mixed in from
`mirror_writes.py`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from google.cloud import firestore
from google.cloud.firestore_v1.base_vector_query import DistanceMeasure
from google.cloud.firestore_v1.vector import Vector

from emailsync.firestore.documents import EMAILS, PROVIDER_USERS, Repository
from emailsync.firestore.limits import MAX_BATCH_BYTES, MAX_BATCH_WRITES, MAX_GET_ALL_REFS, chunks
from emailsync.firestore.mirror_writes import MirrorWrites
from emailsync.models import EmailRecord

# The most results a vector query returns.
MAX_NEAREST = 1000
# `find_nearest` puts the cosine distance of each hit into this extra field of the returned record.
VECTOR_DISTANCE_FIELD = "vectorDistance"


def email_to_document(record: EmailRecord) -> dict[str, Any]:
    """The stored form of an email: camelCase fields, `embedding` as a Firestore Vector, `syncedAt` now."""
    data = record.to_firestore()
    if record.enrichment is not None:
        data["enrichment"] = record.enrichment.to_firestore(exclude_none=True)
    if record.embedding is not None:
        data["embedding"] = Vector(record.embedding)
    data["syncedAt"] = firestore.SERVER_TIMESTAMP
    return data


def cosine_similarity(record: EmailRecord) -> float | None:
    """1 - the cosine distance `find_nearest` put on `record` (None for a record it did not return)."""
    distance = (record.model_extra or {}).get(VECTOR_DISTANCE_FIELD)
    return 1.0 - float(distance) if distance is not None else None


def email_from_document(data: dict[str, Any]) -> EmailRecord:
    embedding = data.get("embedding")
    if isinstance(embedding, Vector):
        data = {**data, "embedding": [float(value) for value in embedding]}
    return EmailRecord.from_firestore(data)


def _approximate_size(data: dict[str, Any]) -> int:
    """Rough request bytes of one document (only to keep a commit under its size limit)."""
    size = 0
    for key, value in data.items():
        size += len(key) + 16
        if isinstance(value, str):
            size += len(value.encode("utf-8", errors="replace"))
        elif isinstance(value, Vector):
            size += 9 * len(value)
        elif isinstance(value, list | dict):
            size += len(repr(value))
        else:
            size += 16
    return size


class EmailRepository(MirrorWrites, Repository):
    """`providerUsers/{providerUserId}/emails/{gmailMessageId}`.

    The document id is the Gmail message id, so storing a message again (a rerun, a retried batch)
    overwrites it instead of adding a duplicate. A record is the whole document: `upsert_many`
    replaces what was stored for that message.
    """

    def _emails(self, provider_user_id: str) -> firestore.CollectionReference:
        return self.client.collection(PROVIDER_USERS).document(provider_user_id).collection(EMAILS)

    def upsert_many(self, provider_user_id: str, records: Iterable[EmailRecord]) -> int:
        """Store `records` in as few commits as the batch limits allow; returns how many were written."""
        emails = self._emails(provider_user_id)
        batch = self.client.batch()
        writes = batch_bytes = written = 0
        for record in records:
            data = email_to_document(record)
            size = _approximate_size(data)
            if writes and (writes >= MAX_BATCH_WRITES or batch_bytes + size > MAX_BATCH_BYTES):
                batch.commit()
                written += writes
                batch = self.client.batch()
                writes = batch_bytes = 0
            batch.set(emails.document(record.message_id), data)
            writes += 1
            batch_bytes += size
        if writes:
            batch.commit()
            written += writes
        return written

    def get(self, provider_user_id: str, message_id: str) -> EmailRecord | None:
        snapshot = self._emails(provider_user_id).document(message_id).get()
        return email_from_document(snapshot.to_dict()) if snapshot.exists else None

    def enriched_ids(self, provider_user_id: str, ids: Iterable[str]) -> set[str]:
        """Those of `ids` already stored with an enrichment and an embedding (one batchGet per 500)."""
        emails = self._emails(provider_user_id)
        unique_ids = list(dict.fromkeys(ids))
        enriched: set[str] = set()
        for chunk in chunks(unique_ids, MAX_GET_ALL_REFS):
            refs = [emails.document(message_id) for message_id in chunk]
            for snapshot in self.client.get_all(refs, field_paths=["enrichment", "embedding"]):
                data = snapshot.to_dict() if snapshot.exists else None
                if data and data.get("enrichment") and data.get("embedding") is not None:
                    enriched.add(snapshot.id)
        return enriched

    def count(self, provider_user_id: str) -> int:
        result = self._emails(provider_user_id).count().get()
        return int(result[0][0].value)

    def list_ids(self, provider_user_id: str) -> list[str]:
        return sorted(ref.id for ref in self._emails(provider_user_id).list_documents())

    def find_nearest(
        self, provider_user_id: str, vector: Sequence[float], limit: int = 5
    ) -> list[EmailRecord]:
        """The `limit` emails whose embedding is nearest (cosine) to `vector`, nearest first; tombstones
        (mail that left the mailbox, `deletedAt` set) are not results.

        Each record carries its distance in the extra field `vectorDistance` (`record.model_extra`).
        """
        asked = limit
        while True:
            query = self._emails(provider_user_id).find_nearest(
                vector_field="embedding",
                query_vector=Vector(list(vector)),
                distance_measure=DistanceMeasure.COSINE,
                limit=asked,
                distance_result_field=VECTOR_DISTANCE_FIELD,
            )
            snapshots = list(query.get())
            live = [email_from_document(s.to_dict()) for s in snapshots if not s.to_dict().get("deletedAt")]
            # Tombstones took places among the nearest: ask for more (vector queries return at most 1000).
            if len(live) >= limit or len(snapshots) < asked or asked >= MAX_NEAREST:
                return live[:limit]
            asked = min(asked * 4, MAX_NEAREST)
