"""What the progress writer (`progress.py`) writes into a `syncProgress` document, shaped: the new
pending document, the fields of a reopened one, the `details` of start and skip, `details` keys as field
paths (so they merge into the stored map), values as Firestore stores them, and the error text."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from enum import Enum
from typing import Any

from google.cloud import firestore
from google.cloud.firestore_v1.field_path import FieldPath
from pydantic import BaseModel
from pydantic.alias_generators import to_camel

from emailsync.firestore.progress_lifecycle import expire_at
from emailsync.models import FirestoreModel, SyncDetails, SyncMode, SyncProgress, SyncStatus, SyncTrigger

MAX_ERROR_CHARS = 4000


def stored_value(value: Any) -> Any:
    """A details value as Firestore stores it (models by their camelCase names, enums by value)."""
    if isinstance(value, FirestoreModel):
        return value.to_firestore()
    if isinstance(value, BaseModel):
        return value.model_dump(mode="python")
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Mapping):
        return {str(key): stored_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [stored_value(item) for item in value]
    return value


def details_fields(details: Mapping[str, Any]) -> dict[str, Any]:
    """`details` keys (snake_case or camelCase) as field paths into the stored map, so they merge."""
    return {FieldPath("details", to_camel(key)).to_api_repr(): stored_value(v) for key, v in details.items()}


def pending_document(
    sync_id: str,
    app_user_id: str,
    family_id: str | None,
    provider_user_id: str,
    trigger: SyncTrigger | str,
    now: datetime,
) -> tuple[SyncProgress, dict[str, Any]]:
    """A new sync's pending document: as a model (what `create_pending` reports when it cannot read it
    back) and as written (`startedAt` and `updatedAt` by the server's clock)."""
    initial = SyncProgress(
        syncId=sync_id,
        appUserId=app_user_id,
        familyId=family_id,
        providerUserId=provider_user_id,
        status=SyncStatus.PENDING,
        progress=0,
        startedAt=now,
        updatedAt=now,
        details=SyncDetails(trigger=SyncTrigger(trigger)),
        expireAt=expire_at(SyncStatus.PENDING, now),
    )
    data = {
        **initial.to_firestore(),
        "startedAt": firestore.SERVER_TIMESTAMP,
        "updatedAt": firestore.SERVER_TIMESTAMP,
    }
    return initial, data


def reopened_fields(stored: Mapping[str, Any], current: SyncStatus, now: datetime) -> dict[str, Any]:
    """A failed (or crash-left in_progress) document back to pending for a retried flow run: progress
    kept, `error` moved to `details.previousError`, `details.attempt` counting the runs."""
    attempt = int((stored.get("details") or {}).get("attempt") or 1) + 1
    return {
        "status": SyncStatus.PENDING.value,
        "error": None,
        "updatedAt": firestore.SERVER_TIMESTAMP,
        "expireAt": expire_at(SyncStatus.PENDING, now),
        **details_fields({"attempt": attempt, "previousError": stored.get("error"), "reopenedFrom": current}),
    }


def start_details(
    mode: SyncMode | str, flow_run_id: str | None, total_estimate: int | None
) -> dict[str, Any]:
    details: dict[str, Any] = {"mode": SyncMode(mode)}
    if flow_run_id is not None:
        details["flowRunId"] = flow_run_id
    if total_estimate is not None:
        details["emailsTotalEstimate"] = total_estimate
    return details_fields(details)


def skip_details(active_sync_id: str | None, reason: str, details: Mapping[str, Any]) -> dict[str, Any]:
    """Why a trigger was skipped: `details.skipped`, `skipReason` and the `activeSyncId` syncing instead."""
    return {**details, "skipped": True, "skip_reason": reason, "active_sync_id": active_sync_id}


def error_text(error: str | BaseException) -> str:
    """The `error` field: the message (or the exception's type), never empty, at most MAX_ERROR_CHARS."""
    if isinstance(error, BaseException):
        text = str(error).strip() or type(error).__name__
    else:
        text = error.strip() or "unknown error"
    return text[:MAX_ERROR_CHARS]
