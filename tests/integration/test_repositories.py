"""Repositories against the real Firestore emulator: what ends up stored, and the sync lease."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from google.cloud import firestore
from google.cloud.firestore_v1.vector import Vector

from emailsync.errors import FatalError, LeaseHeldError
from emailsync.firestore.emails import EmailRepository
from emailsync.firestore.limits import MAX_BATCH_WRITES
from emailsync.firestore.sync_state import SyncStateRepository
from emailsync.firestore.users import CredentialsRepository, ProviderUserRepository
from emailsync.models import (
    BackfillCursor,
    EmailRecord,
    EnrichmentInfo,
    GmailService,
    ProviderCredentials,
    ProviderServices,
    ProviderUser,
)

pytestmark = pytest.mark.integration

PROVIDER_USER = "alice-gmail"
DIMENSIONS = 384


def unit_vector(axis: int, wobble: float = 0.0) -> list[float]:
    """A 384-d embedding pointing along `axis`, tilted by `wobble` towards the next axis."""
    vector = [0.0] * DIMENSIONS
    vector[axis] = 1.0
    vector[(axis + 1) % DIMENSIONS] = wobble
    return vector


def an_email(message_id: str, embedding: list[float] | None = None, **fields: object) -> EmailRecord:
    enriched = embedding is not None
    return EmailRecord(
        message_id=message_id,
        thread_id=f"t-{message_id}",
        app_user_id="alice",
        family_id="smiths",
        subject=f"Subject {message_id}",
        sender="Bob <bob@example.com>",
        date=datetime(2026, 1, 5, tzinfo=UTC),
        body_text="hello",
        summary="A greeting." if enriched else None,
        tags=["personal"] if enriched else [],
        embedding=embedding,
        enrichment=EnrichmentInfo(model="local-test") if enriched else None,
        **fields,
    )


# ---------------------------------------------------------------------------------------- emails


def test_storing_the_same_emails_twice_keeps_one_document_per_message(
    firestore_client: firestore.Client,
) -> None:
    emails = EmailRepository(firestore_client)
    batch = [an_email(f"m{index:03d}") for index in range(MAX_BATCH_WRITES + 20)]  # spans two commits

    emails.upsert_many(PROVIDER_USER, batch)
    emails.upsert_many(PROVIDER_USER, batch)

    assert emails.count(PROVIDER_USER) == len(batch)
    assert emails.list_ids(PROVIDER_USER) == sorted(record.message_id for record in batch)


def test_stored_email_uses_the_message_id_as_document_id_and_design_field_names(
    firestore_client: firestore.Client,
) -> None:
    EmailRepository(firestore_client).upsert_many(PROVIDER_USER, [an_email("18c0ffee", unit_vector(0))])

    stored = (
        firestore_client.collection("providerUsers")
        .document(PROVIDER_USER)
        .collection("emails")
        .document("18c0ffee")
        .get()
        .to_dict()
    )

    assert stored["messageId"] == "18c0ffee"
    assert stored["from"] == "Bob <bob@example.com>"
    assert stored["enrichment"] == {"model": "local-test"}
    assert isinstance(stored["embedding"], Vector)
    assert len(stored["embedding"]) == DIMENSIONS
    assert isinstance(stored["syncedAt"], datetime)


def test_find_nearest_returns_the_closest_emails_by_cosine_first(firestore_client: firestore.Client) -> None:
    emails = EmailRepository(firestore_client)
    emails.upsert_many(
        PROVIDER_USER,
        [
            an_email("school", unit_vector(0)),
            an_email("school-ish", unit_vector(0, wobble=0.5)),
            an_email("bank", unit_vector(10)),
            an_email("travel", unit_vector(20)),
        ],
    )

    nearest = emails.find_nearest(PROVIDER_USER, unit_vector(0, wobble=0.1), limit=2)

    assert [record.message_id for record in nearest] == ["school", "school-ish"]
    assert nearest[0].embedding == pytest.approx(unit_vector(0))
    assert nearest[0].model_extra["vectorDistance"] < nearest[1].model_extra["vectorDistance"]


def test_enriched_ids_names_only_messages_stored_with_enrichment_and_embedding(
    firestore_client: firestore.Client,
) -> None:
    emails = EmailRepository(firestore_client)
    emails.upsert_many(PROVIDER_USER, [an_email("enriched", unit_vector(1)), an_email("raw")])

    found = emails.enriched_ids(PROVIDER_USER, ["enriched", "raw", "never-stored"])

    assert found == {"enriched"}


# ---------------------------------------------------------------------------------------- users


def test_list_gmail_active_returns_only_connected_provider_users(firestore_client: firestore.Client) -> None:
    users = ProviderUserRepository(firestore_client)
    connected = ProviderServices(
        gmail=GmailService(active=True, connected_at=datetime(2026, 1, 1, tzinfo=UTC))
    )
    users.put("alice-gmail", ProviderUser(app_user_id="alice", email="alice@example.com", services=connected))
    users.put("bob-gmail", ProviderUser(app_user_id="bob", email="bob@example.com"))

    active = users.list_gmail_active()

    assert [provider_user_id for provider_user_id, _ in active] == ["alice-gmail"]
    assert active[0][1].gmail_active
    assert users.get("bob-gmail") == ProviderUser(app_user_id="bob", email="bob@example.com")


def test_missing_credentials_are_a_fatal_error_and_stored_ones_round_trip(
    firestore_client: firestore.Client,
) -> None:
    credentials = CredentialsRepository(firestore_client)
    credentials.put("alice-gmail", ProviderCredentials(token="local-token"))

    assert credentials.get("alice-gmail").token == "local-token"
    with pytest.raises(FatalError, match="no Gmail credentials"):
        credentials.get("nobody-gmail")


# ---------------------------------------------------------------------------------------- lease


def test_twenty_concurrent_acquirers_exactly_one_gets_the_lease(firestore_client: firestore.Client) -> None:
    state = SyncStateRepository(firestore_client)
    results: dict[str, bool] = {}
    errors: dict[str, str] = {}
    start_together = threading.Barrier(20)

    def acquire(sync_id: str) -> None:
        start_together.wait()
        try:
            results[sync_id] = state.acquire_lease(
                PROVIDER_USER, sync_id, owner=f"worker-{sync_id}", timeout_seconds=60
            )
        except Exception as exc:  # reported below: a crashed acquirer is a failure, not a loser
            errors[sync_id] = repr(exc)

    threads = [threading.Thread(target=acquire, args=(f"sync-{index}",)) for index in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    winners = [sync_id for sync_id, won in results.items() if won]
    assert errors == {}
    assert len(results) == 20
    assert len(winners) == 1
    stored = state.get(PROVIDER_USER)
    assert stored.active_sync_id == winners[0]
    assert stored.lease_owner == f"worker-{winners[0]}"


def test_a_lease_is_re_entrant_for_its_holder_and_refused_to_others(
    firestore_client: firestore.Client,
) -> None:
    state = SyncStateRepository(firestore_client)

    assert state.acquire_lease(PROVIDER_USER, "sync-a", owner="worker-1", timeout_seconds=60)
    assert state.acquire_lease(PROVIDER_USER, "sync-a", owner="worker-1", timeout_seconds=60)
    assert not state.acquire_lease(PROVIDER_USER, "sync-b", owner="worker-2", timeout_seconds=60)
    assert state.get(PROVIDER_USER).active_sync_id == "sync-a"


def test_an_expired_lease_is_taken_over(firestore_client: firestore.Client) -> None:
    state = SyncStateRepository(firestore_client)
    firestore_client.collection("syncState").document(PROVIDER_USER).set(
        {
            "activeSyncId": "crashed-sync",
            "leaseOwner": "dead-worker",
            "leaseExpiresAt": datetime.now(UTC) - timedelta(seconds=1),
        }
    )

    assert state.acquire_lease(PROVIDER_USER, "sync-new", owner="worker-2", timeout_seconds=60)
    stored = state.get(PROVIDER_USER)
    assert (stored.active_sync_id, stored.lease_owner) == ("sync-new", "worker-2")
    assert stored.lease_expires_at > datetime.now(UTC) + timedelta(seconds=30)


def test_only_the_holder_releases_or_renews_the_lease(firestore_client: firestore.Client) -> None:
    state = SyncStateRepository(firestore_client)
    state.acquire_lease(PROVIDER_USER, "sync-a", owner="worker-1", timeout_seconds=60)

    assert not state.release_lease(PROVIDER_USER, "sync-b")
    assert not state.renew_lease(PROVIDER_USER, "sync-b", timeout_seconds=600)
    assert state.get(PROVIDER_USER).active_sync_id == "sync-a"

    assert state.renew_lease(PROVIDER_USER, "sync-a", timeout_seconds=600)
    assert state.get(PROVIDER_USER).lease_expires_at > datetime.now(UTC) + timedelta(seconds=300)
    assert state.release_lease(PROVIDER_USER, "sync-a")
    assert state.get(PROVIDER_USER).active_sync_id is None
    assert state.acquire_lease(PROVIDER_USER, "sync-b", owner="worker-2", timeout_seconds=60)


# ---------------------------------------------------------------------------------------- checkpoint


def test_backfill_cursor_round_trips_and_completion_clears_it(firestore_client: firestore.Client) -> None:
    state = SyncStateRepository(firestore_client)
    state.acquire_lease(PROVIDER_USER, "sync-a", owner="worker-1", timeout_seconds=60)
    cursor = BackfillCursor(
        window_start=datetime(2025, 12, 29, tzinfo=UTC),
        window_end=datetime(2026, 1, 5, tzinfo=UTC),
        page_token="page-3",
        emails_processed=250,
        batches=3,
    )

    state.save_cursor(PROVIDER_USER, "sync-a", cursor)
    assert state.get(PROVIDER_USER).backfill_cursor == cursor

    state.complete_backfill(PROVIDER_USER, 123456)
    completed = state.get(PROVIDER_USER)
    assert completed.backfill_completed
    assert completed.backfill_cursor is None
    assert completed.last_history_id == "123456"
    assert completed.last_synced_at is not None
    assert completed.active_sync_id == "sync-a"  # finishing the backfill does not release the lease

    state.set_last_history_id(PROVIDER_USER, "123999")
    assert state.get(PROVIDER_USER).last_history_id == "123999"


def test_a_sync_that_lost_its_lease_cannot_move_the_cursor(firestore_client: firestore.Client) -> None:
    state = SyncStateRepository(firestore_client)
    state.acquire_lease(PROVIDER_USER, "sync-new", owner="worker-2", timeout_seconds=60)
    cursor = BackfillCursor(
        window_start=datetime(2026, 1, 1, tzinfo=UTC), window_end=datetime(2026, 1, 8, tzinfo=UTC)
    )

    with pytest.raises(LeaseHeldError, match="sync-new holds the lease"):
        state.save_cursor(PROVIDER_USER, "sync-old", cursor)
    assert state.get(PROVIDER_USER).backfill_cursor is None


def test_checkpoint_saves_the_cursor_and_renews_the_lease_only_for_the_holder(
    firestore_client: firestore.Client,
) -> None:
    state = SyncStateRepository(firestore_client)
    state.acquire_lease(PROVIDER_USER, "sync-a", owner="worker-1", timeout_seconds=5)
    cursor = BackfillCursor(
        window_start=datetime(2026, 1, 1, tzinfo=UTC), window_end=datetime(2026, 1, 8, tzinfo=UTC)
    )

    assert not state.checkpoint(PROVIDER_USER, "sync-b", cursor, timeout_seconds=600)
    assert state.get(PROVIDER_USER).backfill_cursor is None

    assert state.checkpoint(PROVIDER_USER, "sync-a", cursor, timeout_seconds=600)
    stored = state.get(PROVIDER_USER)
    assert stored.backfill_cursor == cursor
    assert stored.lease_expires_at > datetime.now(UTC) + timedelta(seconds=300)
