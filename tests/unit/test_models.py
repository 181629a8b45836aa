"""The stored shape of documents: the names the frontend and DESIGN.md rely on."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from emailsync.models import (
    EmailRecord,
    ProviderCredentials,
    SyncDetails,
    SyncMode,
    SyncProgress,
    SyncState,
    SyncStatus,
    SyncTrigger,
    SyncWindow,
)

STARTED = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
UPDATED = datetime(2026, 1, 5, 9, 2, tzinfo=UTC)


def a_progress(**overrides: object) -> SyncProgress:
    fields: dict[str, object] = {
        "syncId": "sync-1",
        "appUserId": "alice",
        "familyId": "smiths",
        "providerUserId": "alice-gmail",
        "status": SyncStatus.IN_PROGRESS,
        "progress": 42,
        "startedAt": STARTED,
        "updatedAt": UPDATED,
        "details": SyncDetails(
            trigger=SyncTrigger.CONNECT,
            mode=SyncMode.BACKFILL,
            emails_processed=420,
            emails_total_estimate=1000,
            batches=5,
            current_window=SyncWindow(start=STARTED, end=UPDATED),
            flow_run_id="run-1",
        ),
    }
    fields.update(overrides)
    return SyncProgress.model_validate(fields)


def test_sync_progress_is_stored_with_exactly_the_design_field_names() -> None:
    stored = a_progress().to_firestore()

    assert set(stored) == {
        "syncId",
        "appUserId",
        "familyId",
        "providerUserId",
        "type",
        "status",
        "progress",
        "error",
        "startedAt",
        "updatedAt",
        "details",
        "expireAt",
    }
    assert stored["type"] == "email"
    assert stored["status"] == "in_progress"
    assert set(stored["details"]) == {
        "trigger",
        "mode",
        "emailsProcessed",
        "emailsTotalEstimate",
        "batches",
        "currentWindow",
        "flowRunId",
    }
    assert stored["details"]["trigger"] == "connect"
    assert stored["details"]["currentWindow"] == {"start": STARTED, "end": UPDATED}


def test_sync_progress_round_trips_through_its_stored_form() -> None:
    progress = a_progress()

    assert SyncProgress.from_firestore(progress.to_firestore()) == progress


def test_sync_progress_keeps_unknown_detail_keys_written_by_others() -> None:
    stored = a_progress().to_firestore()
    stored["details"]["quotaWaitSeconds"] = 3.5

    again = SyncProgress.from_firestore(stored).to_firestore()

    assert again["details"]["quotaWaitSeconds"] == 3.5


def test_sync_progress_rejects_fields_outside_the_schema() -> None:
    stored = a_progress().to_firestore()
    stored["emailProcessingStatus"] = "done"

    with pytest.raises(ValidationError):
        SyncProgress.from_firestore(stored)


@pytest.mark.parametrize("progress", [0, 57, 100])
def test_sync_progress_accepts_percentages_from_0_to_100(progress: int) -> None:
    assert a_progress(progress=progress).progress == progress


@pytest.mark.parametrize("progress", [-1, 101])
def test_sync_progress_rejects_percentages_outside_0_to_100(progress: int) -> None:
    with pytest.raises(ValidationError):
        a_progress(progress=progress)


def test_only_completed_failed_and_skipped_are_terminal() -> None:
    assert [status for status in SyncStatus if status.terminal] == [
        SyncStatus.COMPLETED,
        SyncStatus.FAILED,
        SyncStatus.SKIPPED,
    ]


SECRETS = {
    "token": "ya29.SECRET-ACCESS",
    "refreshToken": "1//SECRET-REFRESH",
    "clientSecret": "SECRET-CLIENT",
}


def test_credentials_never_show_their_tokens_in_repr_or_str() -> None:
    credentials = ProviderCredentials.from_firestore({**SECRETS, "clientId": "client-1"})

    for shown in (repr(credentials), str(credentials), f"{credentials}", f"{credentials!r}"):
        assert "client-1" in shown
        for secret in SECRETS.values():
            assert secret not in shown


def test_credentials_validation_errors_never_show_the_stored_tokens() -> None:
    with pytest.raises(ValidationError) as raised:
        ProviderCredentials.from_firestore({"refreshToken": SECRETS["refreshToken"], "expiry": "soon"})

    for secret in SECRETS.values():
        assert secret not in str(raised.value)


def test_credentials_need_only_a_token() -> None:
    credentials = ProviderCredentials.from_firestore({"token": "any-bearer"})

    assert credentials.token == "any-bearer"
    assert credentials.scopes == ["https://www.googleapis.com/auth/gmail.readonly"]


def test_email_sender_is_stored_as_from() -> None:
    record = EmailRecord(message_id="18c0a1b2c3d4e5f6", app_user_id="alice", sender="Bob <bob@example.com>")

    stored = record.to_firestore()

    assert stored["from"] == "Bob <bob@example.com>"
    assert "sender" not in stored
    assert EmailRecord.from_firestore(stored).sender == "Bob <bob@example.com>"


def test_sync_state_keeps_a_numeric_history_id_as_text() -> None:
    assert SyncState.from_firestore({"lastHistoryId": 987654}).last_history_id == "987654"
