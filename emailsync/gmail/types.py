"""What the Gmail client answers: messages, pages, history changes, the profile, and its own stats."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

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


class HistoryChanges(BaseModel):
    added_ids: list[str]  # distinct, in history order
    history_id: str  # the mailbox's latest historyId: the next incremental sync starts here


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
