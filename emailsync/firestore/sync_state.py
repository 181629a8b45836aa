"""`syncState/{providerUserId}`: the per-user lease (one sync at a time) and the checkpoint (the backfill
cursor, `lastHistoryId`), each changed by a compare-and-set, never a transaction."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from google.cloud import firestore

from emailsync.config import get_settings
from emailsync.errors import LeaseHeldError
from emailsync.firestore.documents import SYNC_STATE, Repository, compare_and_set
from emailsync.models import BackfillCursor, SyncState


def _now() -> datetime:
    return datetime.now(UTC)


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


class SyncStateRepository(Repository):
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
