"""What the Gmail client answers: messages, pages, history changes, the profile, and its own stats."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, Field

from emailsync.gmail.mime import ParsedEmail, parse_message


class GmailMessage(BaseModel):
    """One message as fetched with format=raw; `raw` is the RFC 5322 bytes."""

    id: str
    thread_id: str | None = None
    label_ids: list[str] = Field(default_factory=list)
    snippet: str = ""
    internal_date: int  # epoch milliseconds
    history_id: str | None = None
    raw: bytes

    @classmethod
    def from_api(cls, data: Mapping[str, Any]) -> GmailMessage:
        """A `Message` resource fetched with format=raw (base64url `raw`, string dates and ids)."""
        raw = str(data.get("raw") or "")
        return cls(
            id=str(data["id"]),
            thread_id=data.get("threadId"),
            label_ids=list(data.get("labelIds") or []),
            snippet=str(data.get("snippet") or ""),
            internal_date=int(data.get("internalDate") or 0),
            history_id=str(data["historyId"]) if data.get("historyId") is not None else None,
            raw=base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)),
        )

    def parse(self) -> ParsedEmail:
        """The email's content, with Gmail's own metadata; never raises (see `parse_message`)."""
        return parse_message(
            self.raw,
            message_id=self.id,
            thread_id=self.thread_id,
            label_ids=self.label_ids,
            internal_date=self.internal_date,
            snippet=self.snippet,
        )


class MessagePage(BaseModel):
    ids: list[str]
    next_page_token: str | None = None
    result_size_estimate: int = 0


HistoryKind = Literal["messageAdded", "messageDeleted", "labelAdded", "labelRemoved"]
# Every record type `history.list` knows: an exact mirror asks for all of them.
HISTORY_TYPES: tuple[HistoryKind, ...] = ("messageAdded", "messageDeleted", "labelAdded", "labelRemoved")
_RECORD_FIELDS: dict[str, HistoryKind] = {
    "messagesAdded": "messageAdded",
    "messagesDeleted": "messageDeleted",
    "labelsAdded": "labelAdded",
    "labelsRemoved": "labelRemoved",
}


class HistoryChange(BaseModel):
    """One change to one message, as a history record tells it."""

    kind: HistoryKind
    message_id: str
    history_id: str  # the id of the record it came in
    # the message's labels as the record gives them (None: the record did not say)
    label_ids: list[str] | None = None
    # labelAdded / labelRemoved: the labels added or removed
    changed_label_ids: list[str] = Field(default_factory=list)


class HistoryPage(BaseModel):
    """One page of `history.list`, its changes in history order.

    `resume_history_id` is where history goes on once this page's changes are applied: the id of its last
    record, or for the last page the mailbox's historyId at the time of the answer."""

    changes: list[HistoryChange] = Field(default_factory=list)
    next_page_token: str | None = None
    history_id: str  # the mailbox's historyId at the time of the answer
    last_record_id: str | None = None

    @property
    def resume_history_id(self) -> str:
        if self.next_page_token and self.last_record_id:
            return self.last_record_id
        return self.history_id

    @classmethod
    def from_api(cls, data: Mapping[str, Any], start_history_id: str) -> HistoryPage:
        changes: list[HistoryChange] = []
        last_record_id: str | None = None
        for record in data.get("history") or []:
            record_id = str(record.get("id") or start_history_id)
            last_record_id = record_id
            for field, kind in _RECORD_FIELDS.items():
                for item in record.get(field) or []:
                    message = item.get("message") or {}
                    if not message.get("id"):
                        continue
                    labels = message.get("labelIds")
                    changes.append(
                        HistoryChange(
                            kind=kind,
                            message_id=str(message["id"]),
                            history_id=record_id,
                            label_ids=list(labels) if labels is not None else None,
                            changed_label_ids=list(item.get("labelIds") or []),
                        )
                    )
        return cls(
            changes=changes,
            next_page_token=data.get("nextPageToken") or None,
            history_id=str(data.get("historyId") or last_record_id or start_history_id),
            last_record_id=last_record_id,
        )


class HistoryChanges(BaseModel):
    """Every page of history since a historyId."""

    pages: list[HistoryPage] = Field(default_factory=list)
    history_id: str  # the mailbox's latest historyId: the next incremental sync starts here

    @property
    def changes(self) -> list[HistoryChange]:
        return [change for page in self.pages for change in page.changes]

    @property
    def added_ids(self) -> list[str]:
        """Ids of the messages added (distinct, in history order)."""
        return list(dict.fromkeys(c.message_id for c in self.changes if c.kind == "messageAdded"))


class GmailLabel(BaseModel):
    id: str
    name: str = ""
    type: str = "user"


class GmailProfile(BaseModel):
    email_address: str
    messages_total: int = 0
    history_id: str


@dataclass
class ClientStats:
    """What the client did; benchmarks and tests read it."""

    http_requests: int = 0  # HTTP round trips (a batch is one)
    calls: int = 0  # API calls (each batch part counts)
    rate_limited: int = 0  # calls answered 429 / rateLimitExceeded
    server_errors: int = 0  # calls answered 5xx or failing in transport
    retries: int = 0  # calls sent again
    not_found: int = 0  # messages that vanished between list and get
    token_refreshes: int = 0  # access tokens obtained with the refresh token
    paced_seconds: float = 0.0  # time spent waiting for quota units
    backoff_seconds: float = 0.0  # time spent in retry delays (Retry-After included)
