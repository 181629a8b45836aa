"""Pydantic models for every Firestore document in DESIGN.md.

Python attributes are snake_case; the stored field names are the camelCase names of DESIGN.md
(`model.to_firestore()` / `Model.from_firestore(data)`). `SyncProgress` is the frontend contract
and keeps exactly the names in DESIGN.md.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel


class FirestoreModel(BaseModel):
    """Base: camelCase in Firestore, snake_case in Python, unknown stored fields kept."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")

    def to_firestore(self, *, exclude_none: bool = False) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=exclude_none, mode="python")

    @classmethod
    def from_firestore(cls, data: dict[str, Any] | None) -> Self:
        return cls.model_validate(data or {})


# ---------------------------------------------------------------------------------------- users


class AppUser(FirestoreModel):
    """`appUsers/{appUserId}`."""

    email: str
    family_id: str | None = None
    admin: bool = False


class Family(FirestoreModel):
    """`families/{familyId}`."""

    member_ids: list[str] = Field(default_factory=list)


class GmailService(FirestoreModel):
    active: bool = False
    connected_at: datetime | None = None
    # The grant was revoked or expired: no automatic sync until the user reconnects (which clears it).
    needs_reauth: bool = False
    needs_reauth_since: datetime | None = None  # when it was set: a later connectedAt is a reconnect


class ProviderServices(FirestoreModel):
    gmail: GmailService = Field(default_factory=GmailService)


class ProviderUser(FirestoreModel):
    """`providerUsers/{providerUserId}`: one connected Google account of an app user."""

    app_user_id: str
    family_id: str | None = None
    provider: Literal["google"] = "google"
    email: str
    services: ProviderServices = Field(default_factory=ProviderServices)

    @property
    def gmail_active(self) -> bool:
        return bool(self.services.gmail.active)

    @property
    def gmail_needs_reauth(self) -> bool:
        return bool(self.services.gmail.needs_reauth)


class ProviderCredentials(FirestoreModel):
    """`providerCredentials/{providerUserId}`: google-auth authorized-user shape. Never logged."""

    # hide_input_in_errors: a ValidationError would otherwise print the whole stored dict (tokens).
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", hide_input_in_errors=True
    )

    token: str = Field(repr=False)
    refresh_token: str | None = Field(default=None, repr=False)
    token_uri: str | None = "https://oauth2.googleapis.com/token"
    client_id: str | None = None
    client_secret: str | None = Field(default=None, repr=False)
    scopes: list[str] = Field(default_factory=lambda: ["https://www.googleapis.com/auth/gmail.readonly"])
    expiry: datetime | None = None

    def __str__(self) -> str:  # tokens must never reach a log line
        return f"ProviderCredentials(client_id={self.client_id!r}, scopes={self.scopes!r})"


# ---------------------------------------------------------------------------------------- emails


class EnrichmentInfo(FirestoreModel):
    model: str
    enriched_at: datetime | None = None  # when it was computed (once per message id)


class EmailContent(FirestoreModel):
    """What a message itself says: the fields the MIME parser fills (`emailsync.gmail.mime.ParsedEmail`)."""

    message_id: str
    thread_id: str | None = None
    subject: str = ""
    sender: str = Field(default="", alias="from")
    to: list[str] = Field(default_factory=list)
    cc: list[str] = Field(default_factory=list)
    date: datetime | None = None
    internal_date: int | None = None  # epoch milliseconds, as Gmail reports it
    label_ids: list[str] = Field(default_factory=list)
    snippet: str = ""
    body_text: str = ""
    truncated: bool = False
    parse_errors: list[str] = Field(default_factory=list)
    raw_headers: str | None = None  # kept when the message could not be parsed cleanly
    attachments: list[dict[str, Any]] = Field(default_factory=list)


def label_flags(label_ids: Iterable[str], *, deleted: bool = False) -> dict[str, bool]:
    """The stored booleans the frontend filters on (`unread`, `starred`, `inInbox`), from Gmail's labels.
    A tombstone (deleted: it left the mailbox) is none of them."""
    labels = set(label_ids)
    return {
        "unread": not deleted and "UNREAD" in labels,
        "starred": not deleted and "STARRED" in labels,
        "inInbox": not deleted and "INBOX" in labels,
    }


class EmailRecord(EmailContent):
    """`providerUsers/{providerUserId}/emails/{gmailMessageId}` (document id = Gmail message id):
    the content plus its owner and enrichment. `labelIds` are Gmail's; `unread`, `starred`, `in_inbox`
    follow from them (so the frontend can query them with an index); `deleted_at` marks a tombstone."""

    app_user_id: str
    family_id: str | None = None
    summary: str | None = None
    tags: list[str] = Field(default_factory=list)
    embedding: list[float] | None = None  # stored as a Firestore Vector by the repository
    enrichment: EnrichmentInfo | None = None
    synced_at: datetime | None = None
    unread: bool = False
    starred: bool = False
    in_inbox: bool = False
    deleted_at: datetime | None = None  # EMAILSYNC_DELETED_MAIL=keep: when it left the mailbox

    @model_validator(mode="after")
    def _flags_follow_labels(self) -> EmailRecord:
        flags = label_flags(self.label_ids, deleted=self.deleted_at is not None)
        self.unread, self.starred, self.in_inbox = flags["unread"], flags["starred"], flags["inInbox"]
        return self


# ---------------------------------------------------------------------------------------- progress


class SyncStatus(StrEnum):
    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"
    # A duplicate trigger that found another sync of the mailbox running ("already syncing"): it did no
    # work of its own, so it is never shown as a finished 100% sync (`details.activeSyncId` links the
    # sync that is running).
    SKIPPED = "skipped"

    @property
    def terminal(self) -> bool:
        return self in (SyncStatus.COMPLETED, SyncStatus.FAILED, SyncStatus.SKIPPED)


class SyncTrigger(StrEnum):
    CONNECT = "connect"
    SCHEDULE = "schedule"
    MANUAL = "manual"
    PUSH = "push"  # a Gmail push notification (users.watch → Pub/Sub)


class SyncMode(StrEnum):
    BACKFILL = "backfill"
    INCREMENTAL = "incremental"


class SyncWindow(FirestoreModel):
    start: datetime
    end: datetime


class SyncDetails(FirestoreModel):
    """`syncProgress.details`: open map; these keys are always understood by the frontend."""

    trigger: SyncTrigger = SyncTrigger.MANUAL
    mode: SyncMode | None = None
    emails_processed: int = 0
    emails_total_estimate: int | None = None
    batches: int = 0
    current_window: SyncWindow | None = None
    flow_run_id: str | None = None


class SyncProgress(BaseModel):
    """`syncProgress/{syncId}`, exactly the schema of DESIGN.md (field names are the stored names)."""

    model_config = ConfigDict(extra="forbid", use_enum_values=False)

    COLLECTION: ClassVar[str] = "syncProgress"

    syncId: str
    appUserId: str
    familyId: str | None = None
    providerUserId: str
    type: Literal["email"] = "email"
    status: SyncStatus = SyncStatus.PENDING
    progress: int = Field(default=0, ge=0, le=100)
    error: str | None = None
    startedAt: datetime
    updatedAt: datetime
    details: SyncDetails = Field(default_factory=SyncDetails)
    expireAt: datetime | None = None  # Firestore's TTL policy deletes the document after this

    def to_firestore(self) -> dict[str, Any]:
        data = self.model_dump(mode="python")
        data["status"] = self.status.value
        data["details"] = self.details.to_firestore()
        return data

    @classmethod
    def from_firestore(cls, data: dict[str, Any]) -> SyncProgress:
        return cls.model_validate(data)


# ---------------------------------------------------------------------------------------- sync state


class BackfillCursor(FirestoreModel):
    """Where a backfill resumes: the week window being walked and the next page in it."""

    window_start: datetime
    window_end: datetime
    page_token: str | None = None
    emails_processed: int = 0
    batches: int = 0
    # Profile historyId when the backfill began: a resumed backfill still hands it to the incremental sync.
    start_history_id: str | None = None


class SyncState(FirestoreModel):
    """`syncState/{providerUserId}`: lease + checkpoint + cursors. No client reads it."""

    active_sync_id: str | None = None
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None
    lease_holder: str | None = None  # the holding process (emailsync.sync.lease.holder_identity)
    slot_lease_id: str | None = None  # the holder's Prefect concurrency slot lease, released on take-over
    backfill_cursor: BackfillCursor | None = None
    backfill_completed: bool = False
    last_history_id: str | None = None
    last_synced_at: datetime | None = None

    @field_validator("last_history_id", mode="before")
    @classmethod
    def _history_id_as_str(cls, value: Any) -> Any:
        return str(value) if value is not None else None
