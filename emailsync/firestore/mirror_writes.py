"""The mirror's writes on `providerUsers/{id}/emails` (mixed into `EmailRepository`): what is stored
for a set of ids, labels set from Gmail's, mail that leaves the mailbox (tombstone or removed, its
enrichment kept aside while it may come back), and the enrichments kept aside."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from google.cloud import firestore

from emailsync.firestore.limits import MAX_BATCH_WRITES, MAX_GET_ALL_REFS, chunks
from emailsync.models import label_flags
from emailsync.sync.mirror import StoredState

# The stored fields the mirror compares, and those an enrichment consists of.
STATE_FIELDS = ("labelIds", "deletedAt", "enrichment", "internalDate")
ENRICHMENT_FIELDS = ("summary", "tags", "embedding", "enrichment")
# Enrichments of emails removed while in the trash or spam (EMAILSYNC_DELETED_MAIL=remove), so one that
# comes back is not enriched again. Backend only: no rule lets a client read it.
KEPT_ENRICHMENTS = "keptEnrichments"


def _stored_state(data: dict[str, Any]) -> StoredState:
    enrichment = data.get("enrichment")
    return StoredState(
        label_ids=list(data.get("labelIds") or []),
        enriched=bool(enrichment),
        deleted=data.get("deletedAt") is not None,
        internal_date=data.get("internalDate"),
    )


class MirrorWrites:
    """Needs `client` and `_emails(provider_user_id)` (EmailRepository has both)."""

    client: firestore.Client

    def _emails(self, provider_user_id: str) -> firestore.CollectionReference:
        raise NotImplementedError

    def _kept(self, provider_user_id: str) -> firestore.CollectionReference:
        provider_user = self._emails(provider_user_id).parent
        assert provider_user is not None
        return provider_user.collection(KEPT_ENRICHMENTS)

    def states(self, provider_user_id: str, ids: Iterable[str]) -> dict[str, StoredState]:
        """What is stored for those of `ids` that have a document (tombstones included)."""
        emails = self._emails(provider_user_id)
        states: dict[str, StoredState] = {}
        for chunk in chunks(list(dict.fromkeys(ids)), MAX_GET_ALL_REFS):
            refs = [emails.document(message_id) for message_id in chunk]
            for snapshot in self.client.get_all(refs, field_paths=list(STATE_FIELDS)):
                if snapshot.exists:
                    states[snapshot.id] = _stored_state(snapshot.to_dict() or {})
        return states

    def all_states(self, provider_user_id: str) -> dict[str, StoredState]:
        """What is stored for every document of the user (tombstones included), without the content."""
        query = self._emails(provider_user_id).select(list(STATE_FIELDS))
        return {snapshot.id: _stored_state(snapshot.to_dict() or {}) for snapshot in query.stream()}

    def set_labels(self, provider_user_id: str, labels: Mapping[str, list[str]]) -> int:
        """Gmail's labels (and the flags that follow from them) on kept emails; a tombstone is restored."""
        emails = self._emails(provider_user_id)
        writes = [
            (
                emails.document(message_id),
                {"labelIds": list(label_ids), **label_flags(label_ids), "deletedAt": None},
            )
            for message_id, label_ids in labels.items()
        ]
        self._commit(writes)
        return len(writes)

    def leave(
        self, provider_user_id: str, leaving: Mapping[str, list[str] | None], *, keep: bool, for_good: bool
    ) -> int:
        """Emails that left the mailbox: tombstones (`keep`) or removed. Removed for a while (trash, spam),
        their enrichment is kept aside for their return; gone `for_good`, it is dropped."""
        emails = self._emails(provider_user_id)
        kept = self._kept(provider_user_id)
        writes: list[tuple[Any, dict[str, Any] | None]] = []
        if keep:
            live = {i for i, state in self.states(provider_user_id, leaving).items() if not state.deleted}
            for message_id, label_ids in leaving.items():
                if message_id not in live:
                    continue
                fields: dict[str, Any] = {
                    "deletedAt": firestore.SERVER_TIMESTAMP,
                    **label_flags((), deleted=True),
                }
                if label_ids is not None:
                    fields["labelIds"] = list(label_ids)
                writes.append((emails.document(message_id), fields))
        else:
            if not for_good:
                for message_id, enrichment in self._enrichments(provider_user_id, list(leaving)).items():
                    writes.append((kept.document(message_id), enrichment))
            writes.extend((emails.document(message_id), None) for message_id in leaving)
        if for_good:
            writes.extend((kept.document(message_id), None) for message_id in leaving)
        self._commit(writes, existing_only=keep)
        return len(leaving)

    def kept_enrichments(self, provider_user_id: str, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Enrichments kept aside for `ids` (removed while in the trash or spam), by id."""
        kept = self._kept(provider_user_id)
        found: dict[str, dict[str, Any]] = {}
        for chunk in chunks(list(dict.fromkeys(ids)), MAX_GET_ALL_REFS):
            for snapshot in self.client.get_all([kept.document(message_id) for message_id in chunk]):
                if snapshot.exists:
                    found[snapshot.id] = snapshot.to_dict() or {}
        return found

    def drop_kept_enrichments(self, provider_user_id: str, ids: Iterable[str]) -> None:
        kept = self._kept(provider_user_id)
        self._commit([(kept.document(message_id), None) for message_id in dict.fromkeys(ids)])

    def _enrichments(self, provider_user_id: str, ids: list[str]) -> dict[str, dict[str, Any]]:
        emails = self._emails(provider_user_id)
        found: dict[str, dict[str, Any]] = {}
        for chunk in chunks(ids, MAX_GET_ALL_REFS):
            refs = [emails.document(message_id) for message_id in chunk]
            for snapshot in self.client.get_all(refs, field_paths=list(ENRICHMENT_FIELDS)):
                data = snapshot.to_dict() if snapshot.exists else None
                if data and data.get("enrichment"):
                    found[snapshot.id] = data
        return found

    def _commit(
        self, writes: Sequence[tuple[Any, dict[str, Any] | None]], *, existing_only: bool = False
    ) -> None:
        """Merge-writes (None: delete) in commits of at most `MAX_BATCH_WRITES`."""
        for chunk in chunks(writes, MAX_BATCH_WRITES):
            batch = self.client.batch()
            for reference, fields in chunk:
                if fields is None:
                    batch.delete(reference)
                elif existing_only:
                    batch.update(reference, fields)
                else:
                    batch.set(reference, fields, merge=True)
            batch.commit()
