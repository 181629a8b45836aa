"""Firestore repositories: the only code that reads and writes the backend collections of DESIGN.md.

Every repository takes an optional `firestore.Client` (default: `get_firestore_client()`) and speaks
pydantic models (emailsync/models.py). `syncProgress` is not here: `progress.ProgressWriter` owns it.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import firestore
from google.cloud.firestore_v1.base_vector_query import DistanceMeasure
from google.cloud.firestore_v1.vector import Vector

from emailsync.config import get_settings
from emailsync.errors import FatalError, LeaseHeldError, RetriableError
from emailsync.firestore.client import get_firestore_client
from emailsync.firestore.limits import MAX_BATCH_BYTES, MAX_BATCH_WRITES, MAX_GET_ALL_REFS
from emailsync.firestore.mirror_writes import MirrorWrites
from emailsync.models import (
    AppUser,
    BackfillCursor,
    EmailRecord,
    Family,
    ProviderCredentials,
    ProviderUser,
    SyncState,
)

APP_USERS = "appUsers"
FAMILIES = "families"
PROVIDER_USERS = "providerUsers"
PROVIDER_CREDENTIALS = "providerCredentials"
EMAILS = "emails"
SYNC_STATE = "syncState"

# Read-decide-write on one document is a compare-and-set: the write is conditioned on the version that
# was read (`update_time`, or "does not exist yet"), so of many concurrent writers exactly one lands and
# the others decide again on fresh data. (Firestore transactions would do the same but lock on read;
# the emulator resolves lock conflicts only by a 2 s timeout, so 20 contenders can livelock there.)
COMPARE_AND_SET_ATTEMPTS = 25
COMPARE_AND_SET_JITTER_SECONDS = 0.02
# The most results a vector query returns.
MAX_NEAREST = 1000
# `find_nearest` puts the cosine distance of each hit into this extra field of the returned record.
VECTOR_DISTANCE_FIELD = "vectorDistance"


def _now() -> datetime:
    return datetime.now(UTC)


def compare_and_set(
    client: firestore.Client,
    document: firestore.DocumentReference,
    decide: Callable[[firestore.DocumentSnapshot], dict[str, Any] | None],
) -> bool:
    """Atomically read `document`, let `decide` compute the write, and write it only if nothing changed.

    `decide(snapshot)` returns the fields to write (field paths for an existing document, a whole
    document for a missing one) or None to write nothing; it may raise to refuse. Returns whether a
    write landed. A document that keeps changing under us raises `RetriableError`.
    """
    for _attempt in range(COMPARE_AND_SET_ATTEMPTS):
        snapshot = document.get()
        fields = decide(snapshot)
        if fields is None:
            return False
        try:
            if snapshot.exists:
                precondition = client.write_option(last_update_time=snapshot.update_time)
                document.update(fields, option=precondition)
            else:
                document.create(fields)
            return True
        except (gexc.FailedPrecondition, gexc.AlreadyExists, gexc.NotFound):
            time.sleep(random.uniform(0, COMPARE_AND_SET_JITTER_SECONDS))  # lost the race: decide again
    raise RetriableError(f"{document.path} kept changing during {COMPARE_AND_SET_ATTEMPTS} attempts")


class _Repository:
    def __init__(self, client: firestore.Client | None = None) -> None:
        self.client = client or get_firestore_client()


# ---------------------------------------------------------------------------------------- users


class ProviderUserRepository(_Repository):
    """`providerUsers/{providerUserId}`."""

    def get(self, provider_user_id: str) -> ProviderUser | None:
        snapshot = self.client.collection(PROVIDER_USERS).document(provider_user_id).get()
        return ProviderUser.from_firestore(snapshot.to_dict()) if snapshot.exists else None

    def list_gmail_active(self) -> list[tuple[str, ProviderUser]]:
        """Every provider user whose Gmail is connected (`services.gmail.active == true`), by id."""
        query = self.client.collection(PROVIDER_USERS).where(
            filter=firestore.FieldFilter("services.gmail.active", "==", True)
        )
        users = [
            (snapshot.id, ProviderUser.from_firestore(snapshot.to_dict())) for snapshot in query.stream()
        ]
        return sorted(users, key=lambda item: item[0])

    def put(self, provider_user_id: str, user: ProviderUser) -> None:
        self.client.collection(PROVIDER_USERS).document(provider_user_id).set(user.to_firestore())

    def set_needs_reauth(self, provider_user_id: str, needs_reauth: bool) -> None:
        """`services.gmail.needsReauth`: set when the grant is revoked (with `needsReauthSince`, so a
        reconnect nobody saw happen is still recognised), cleared on reconnect."""
        document = self.client.collection(PROVIDER_USERS).document(provider_user_id)
        since = firestore.SERVER_TIMESTAMP if needs_reauth else None
        document.update(
            {"services.gmail.needsReauth": needs_reauth, "services.gmail.needsReauthSince": since}
        )


class CredentialsRepository(_Repository):
    """`providerCredentials/{providerUserId}`: OAuth data. Never logged, never readable by clients."""

    def get(self, provider_user_id: str) -> ProviderCredentials:
        snapshot = self.client.collection(PROVIDER_CREDENTIALS).document(provider_user_id).get()
        if not snapshot.exists:
            raise FatalError(f"no Gmail credentials stored for provider user {provider_user_id}")
        return ProviderCredentials.from_firestore(snapshot.to_dict())

    def put(self, provider_user_id: str, credentials: ProviderCredentials) -> None:
        document = self.client.collection(PROVIDER_CREDENTIALS).document(provider_user_id)
        document.set(credentials.to_firestore(exclude_none=True))

    def save_refreshed(
        self, provider_user_id: str, refreshed: ProviderCredentials, refreshed_with: str | None
    ) -> bool:
        """Write a refreshed access token (and expiry, and a rotated refresh token) back; true if written.

        `refreshed_with` is the refresh token the refresh used. Nothing is written when the stored token
        and expiry already are these, nor when the stored grant is another one (the user reconnected
        meanwhile: their new credentials win)."""
        document = self.client.collection(PROVIDER_CREDENTIALS).document(provider_user_id)

        def decide(snapshot: firestore.DocumentSnapshot) -> dict[str, Any] | None:
            if not snapshot.exists:
                return None  # purged (disconnect): nothing to keep fresh
            stored = ProviderCredentials.from_firestore(snapshot.to_dict())
            if stored.refresh_token != refreshed_with:
                return None
            if stored.token == refreshed.token and stored.expiry == refreshed.expiry:
                return None
            update: dict[str, Any] = {"token": refreshed.token, "expiry": refreshed.expiry}
            if refreshed.refresh_token and refreshed.refresh_token != stored.refresh_token:
                update["refreshToken"] = refreshed.refresh_token
            return update

        return compare_and_set(self.client, document, decide)

    def delete(self, provider_user_id: str) -> None:
        self.client.collection(PROVIDER_CREDENTIALS).document(provider_user_id).delete()


class AppUserRepository(_Repository):
    """`appUsers/{appUserId}`."""

    def get(self, app_user_id: str) -> AppUser | None:
        snapshot = self.client.collection(APP_USERS).document(app_user_id).get()
        return AppUser.from_firestore(snapshot.to_dict()) if snapshot.exists else None

    def put(self, app_user_id: str, user: AppUser) -> None:
        self.client.collection(APP_USERS).document(app_user_id).set(user.to_firestore())


class FamilyRepository(_Repository):
    """`families/{familyId}`."""

    def get(self, family_id: str) -> Family | None:
        snapshot = self.client.collection(FAMILIES).document(family_id).get()
        return Family.from_firestore(snapshot.to_dict()) if snapshot.exists else None

    def put(self, family_id: str, family: Family) -> None:
        self.client.collection(FAMILIES).document(family_id).set(family.to_firestore())


# ---------------------------------------------------------------------------------------- emails


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


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class EmailRepository(MirrorWrites, _Repository):
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
        for chunk in _chunks(unique_ids, MAX_GET_ALL_REFS):
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


# ---------------------------------------------------------------------------------------- sync state


def _state_of(snapshot: firestore.DocumentSnapshot) -> SyncState:
    return SyncState.from_firestore(snapshot.to_dict() if snapshot.exists else None)


def _lease_timeout(timeout_seconds: float | None) -> float:
    return timeout_seconds if timeout_seconds is not None else get_settings().lease_timeout_seconds


def _held_by_other(state: SyncState, sync_id: str, now: datetime) -> bool:
    return (
        state.active_sync_id is not None
        and state.active_sync_id != sync_id
        and state.lease_expires_at is not None
        and state.lease_expires_at > now
    )


def _history_after(candidate: str, current: str | None) -> bool:
    """Whether `candidate` is a later historyId than `current` (Gmail's ids are increasing integers)."""
    if current is None:
        return True
    try:
        return int(candidate) > int(current)
    except ValueError:
        return candidate != current


class SyncStateRepository(_Repository):
    """`syncState/{providerUserId}`: the lease (one sync per provider user) and the checkpoint.

    Lease expiry compares against this machine's clock (`leaseExpiresAt` is written from it too);
    the timeout (minutes) dwarfs any clock skew between workers.
    """

    def _document(self, provider_user_id: str) -> firestore.DocumentReference:
        return self.client.collection(SYNC_STATE).document(provider_user_id)

    def get(self, provider_user_id: str) -> SyncState:
        return _state_of(self._document(provider_user_id).get())

    def acquire_lease(
        self,
        provider_user_id: str,
        sync_id: str,
        owner: str,
        timeout_seconds: float | None = None,
        *,
        holder: str | None = None,
        take_over_from: str | None = None,
    ) -> bool:
        """Take the lease for `sync_id`: true if it was free, expired, or already held by `sync_id`, or
        (with `take_over_from`) still held by that sync, known to be dead.

        A compare-and-set on the state document: of any number of concurrent acquirers exactly one wins.
        `holder` identifies the process (see `emailsync.sync.lease`).
        """
        timeout = _lease_timeout(timeout_seconds)

        def decide(snapshot: firestore.DocumentSnapshot) -> dict[str, Any] | None:
            now = _now()
            state = _state_of(snapshot)
            if _held_by_other(state, sync_id, now) and (
                take_over_from is None or state.active_sync_id != take_over_from
            ):
                return None
            fields: dict[str, Any] = {
                "activeSyncId": sync_id,
                "leaseOwner": owner,
                "leaseExpiresAt": now + timedelta(seconds=timeout),
                "leaseHolder": holder,
            }
            if state.active_sync_id != sync_id:
                fields["slotLeaseId"] = None
            return fields

        return compare_and_set(self.client, self._document(provider_user_id), decide)

    def record_slot_lease(self, provider_user_id: str, sync_id: str, slot_lease_id: str | None) -> bool:
        """Remember the Prefect slot lease of the sync holding the lease (for whoever takes it over)."""

        def decide(snapshot: firestore.DocumentSnapshot) -> dict[str, Any] | None:
            if _state_of(snapshot).active_sync_id != sync_id:
                return None
            return {"slotLeaseId": slot_lease_id}

        return compare_and_set(self.client, self._document(provider_user_id), decide)

    def renew_lease(self, provider_user_id: str, sync_id: str, timeout_seconds: float | None = None) -> bool:
        """Push the expiry of a lease `sync_id` holds to now + timeout; false if it is no longer ours."""
        return self.checkpoint(provider_user_id, sync_id, None, timeout_seconds)

    def release_lease(self, provider_user_id: str, sync_id: str) -> bool:
        """Give the lease up, only if `sync_id` still holds it (a taken-over lease stays with its taker)."""

        def decide(snapshot: firestore.DocumentSnapshot) -> dict[str, Any] | None:
            if _state_of(snapshot).active_sync_id != sync_id:
                return None
            return {
                "activeSyncId": None,
                "leaseOwner": None,
                "leaseExpiresAt": None,
                "leaseHolder": None,
                "slotLeaseId": None,
            }

        return compare_and_set(self.client, self._document(provider_user_id), decide)

    def save_cursor(self, provider_user_id: str, sync_id: str, cursor: BackfillCursor | None) -> None:
        """Checkpoint the backfill position of `sync_id` (None clears it).

        Fenced by the lease: a sync whose lease was taken over must not move the new holder's cursor,
        so this raises `LeaseHeldError` when another sync holds the lease.
        """
        value = cursor.to_firestore() if cursor is not None else None

        def decide(snapshot: firestore.DocumentSnapshot) -> dict[str, Any]:
            holder = _state_of(snapshot).active_sync_id
            if holder is not None and holder != sync_id:
                raise LeaseHeldError(
                    f"sync {sync_id} cannot save its cursor: sync {holder} holds the lease "
                    f"of provider user {provider_user_id}"
                )
            return {"backfillCursor": value}

        compare_and_set(self.client, self._document(provider_user_id), decide)

    def checkpoint(
        self,
        provider_user_id: str,
        sync_id: str,
        cursor: BackfillCursor | None,
        timeout_seconds: float | None = None,
        *,
        history_id: str | None = None,
    ) -> bool:
        """Save the cursor (when given) and renew the lease of `sync_id` in one conditional write; with
        `history_id`, move `lastHistoryId` forward to it (never backwards).

        No transaction on purpose: this runs after every batch, and a worker killed inside a transaction
        leaves a lock that blocks every later write to the document (the emulator never drops it).
        False (and nothing written) when `sync_id` does not hold the lease.
        """
        timeout = _lease_timeout(timeout_seconds)

        def decide(snapshot: firestore.DocumentSnapshot) -> dict[str, Any] | None:
            if not snapshot.exists or _state_of(snapshot).active_sync_id != sync_id:
                return None
            update: dict[str, Any] = {"leaseExpiresAt": _now() + timedelta(seconds=timeout)}
            if cursor is not None:
                update["backfillCursor"] = cursor.to_firestore()
            if history_id is not None and _history_after(history_id, _state_of(snapshot).last_history_id):
                update["lastHistoryId"] = str(history_id)
            return update

        return compare_and_set(self.client, self._document(provider_user_id), decide)

    def complete_backfill(self, provider_user_id: str, history_id: str | int) -> None:
        """The whole mailbox is stored: later syncs are incremental from `history_id`."""
        self._document(provider_user_id).set(
            {
                "backfillCompleted": True,
                "backfillCursor": None,
                "lastHistoryId": str(history_id),
                "lastSyncedAt": firestore.SERVER_TIMESTAMP,
            },
            merge=True,
        )

    def set_last_history_id(self, provider_user_id: str, history_id: str | int) -> None:
        """An incremental sync caught up to `history_id` (an older one than stored is not written back)."""

        def decide(snapshot: firestore.DocumentSnapshot) -> dict[str, Any]:
            update: dict[str, Any] = {"lastSyncedAt": firestore.SERVER_TIMESTAMP}
            if _history_after(str(history_id), _state_of(snapshot).last_history_id):
                update["lastHistoryId"] = str(history_id)
            return update

        compare_and_set(self.client, self._document(provider_user_id), decide)
