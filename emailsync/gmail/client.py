"""The Gmail API calls a sync makes, for one user: `GmailClient`, the one client of production code.

Every call goes through one `GmailConnection` (`connection.py`: pacing, the one retry path, error
classification, token refresh, stats); the messages themselves come in adaptive batch requests
(`batch_fetch.py`). Tokens never reach a log line or an exception message.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from emailsync.config import Settings, get_settings
from emailsync.errors import RetriableError
from emailsync.gmail import settings as gmail_settings
from emailsync.gmail.batch_fetch import MessageBatchFetcher
from emailsync.gmail.connection import GmailConnection
from emailsync.gmail.credentials import TokenRefreshed
from emailsync.gmail.pacing import Sleep, TokenBucket
from emailsync.gmail.settings import DEFAULT_RETRY_POLICY, RetryPolicy
from emailsync.gmail.types import (
    HISTORY_TYPES,
    GmailLabel,
    GmailMessage,
    GmailProfile,
    HistoryChanges,
    HistoryPage,
    MessagePage,
)
from emailsync.models import ProviderCredentials


def _epoch_seconds(moment: datetime) -> int:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


class GmailClient:
    """Gmail API for one user (see docs/ARCHITECTURE.md)."""

    def __init__(
        self,
        credentials: ProviderCredentials,
        settings: Settings | None = None,
        *,
        retry_policy: RetryPolicy = DEFAULT_RETRY_POLICY,
        bucket: TokenBucket | None = None,
        sleep: Sleep = time.sleep,
        on_token_refresh: TokenRefreshed | None = None,
    ) -> None:
        """`on_token_refresh` receives the credentials after every token refresh (to persist them)."""
        self._connection = GmailConnection(
            credentials,
            settings or get_settings(),
            retry_policy=retry_policy,
            bucket=bucket,
            sleep=sleep,
            on_token_refresh=on_token_refresh,
        )
        self._batches = MessageBatchFetcher(self._connection)
        self.stats = self._connection.stats

    def get_profile(self) -> GmailProfile:
        gmail = self._connection
        data = gmail.call(gmail.users.getProfile(userId="me"), gmail.costs.get_profile, "users.getProfile")
        return GmailProfile(
            email_address=str(data.get("emailAddress") or ""),
            messages_total=int(data.get("messagesTotal") or 0),
            history_id=str(data.get("historyId") or ""),
        )

    def list_messages(
        self,
        after: datetime | None = None,
        before: datetime | None = None,
        page_token: str | None = None,
        max_results: int = gmail_settings.DEFAULT_LIST_PAGE_SIZE,
    ) -> MessagePage:
        """One page of message ids, newest first, with `after <= date < before` (epoch-second bounds)."""
        gmail = self._connection
        terms = []
        if after is not None:
            terms.append(f"after:{_epoch_seconds(after)}")
        if before is not None:
            terms.append(f"before:{_epoch_seconds(before)}")
        params: dict[str, Any] = {
            "userId": "me",
            "maxResults": max(1, min(int(max_results), gmail_settings.MAX_LIST_PAGE_SIZE)),
        }
        if terms:
            params["q"] = " ".join(terms)
        if page_token:
            params["pageToken"] = page_token
        data = gmail.call(gmail.messages.list(**params), gmail.costs.messages_list, "messages.list")
        return MessagePage(
            ids=[str(m["id"]) for m in data.get("messages") or []],
            next_page_token=data.get("nextPageToken") or None,
            result_size_estimate=int(data.get("resultSizeEstimate") or 0),
        )

    def list_all_message_ids(
        self, after: datetime | None = None, before: datetime | None = None
    ) -> list[str]:
        """Every message id matching the bounds, following all pages (largest pages, fewest calls)."""
        ids: list[str] = []
        page_token: str | None = None
        while True:
            page = self.list_messages(after, before, page_token, gmail_settings.MAX_LIST_PAGE_SIZE)
            ids.extend(page.ids)
            page_token = page.next_page_token
            if not page_token:
                return ids

    def newest_message_before(self, before: datetime) -> datetime | None:
        """Date (internalDate) of the newest message older than `before`; None when there is none."""
        gmail = self._connection
        for _ in range(3):
            page = self.list_messages(before=before, max_results=1)
            if not page.ids:
                return None
            request = gmail.messages.get(userId="me", id=page.ids[0], format="minimal")
            data = gmail.execute(request, gmail.costs.messages_get, "messages.get", allow_missing=True)
            if data is not None:
                return datetime.fromtimestamp(int(data.get("internalDate") or 0) / 1000, tz=UTC)
            # deleted between the two calls: ask again
        # Saying "nothing older" here would end a backfill early; let the caller retry later instead.
        raise RetriableError("messages.list/get: the newest older message keeps disappearing")

    def list_history_page(self, start_history_id: str, page_token: str | None = None) -> HistoryPage:
        """One page of every change since `start_history_id` (all four record types, history order).

        404 (the id is older than Gmail keeps history) → `HistoryExpiredError`."""
        gmail = self._connection
        params: dict[str, Any] = {
            "userId": "me",
            "startHistoryId": str(start_history_id),
            "historyTypes": list(HISTORY_TYPES),
            "maxResults": gmail_settings.MAX_HISTORY_PAGE_SIZE,
        }
        if page_token:
            params["pageToken"] = page_token
        data = gmail.call(gmail.history.list(**params), gmail.costs.history_list, "history.list")
        return HistoryPage.from_api(data, str(start_history_id))

    def list_history(self, start_history_id: str) -> HistoryChanges:
        """Every page of changes since `start_history_id`. 404 → `HistoryExpiredError`."""
        pages: list[HistoryPage] = []
        page_token: str | None = None
        while True:
            page = self.list_history_page(start_history_id, page_token)
            pages.append(page)
            page_token = page.next_page_token
            if not page_token:
                return HistoryChanges(pages=pages, history_id=page.history_id)

    def list_labels(self) -> list[GmailLabel]:
        """The mailbox's labels, system and user ones (`labels.list`)."""
        gmail = self._connection
        labels = gmail.users.labels()
        data = gmail.call(labels.list(userId="me"), gmail.costs.labels_list, "labels.list")
        return [
            GmailLabel(id=str(item["id"]), name=str(item.get("name") or ""), type=str(item.get("type") or ""))
            for item in data.get("labels") or []
            if item.get("id")
        ]

    def list_ids_with_label(
        self, label_id: str | None = None, *, include_spam_trash: bool = False, after: datetime | None = None
    ) -> list[str]:
        """Every id `messages.list` gives (default set: no SPAM, no TRASH), optionally with one label;
        largest pages, so a reconcile reads 500 ids per call."""
        gmail = self._connection
        ids: list[str] = []
        page_token: str | None = None
        while True:
            params: dict[str, Any] = {"userId": "me", "maxResults": gmail_settings.MAX_LIST_PAGE_SIZE}
            if label_id is not None:
                params["labelIds"] = [label_id]
            if include_spam_trash:
                params["includeSpamTrash"] = True
            if after is not None:
                params["q"] = f"after:{_epoch_seconds(after)}"
            if page_token:
                params["pageToken"] = page_token
            data = gmail.call(gmail.messages.list(**params), gmail.costs.messages_list, "messages.list")
            ids.extend(str(m["id"]) for m in data.get("messages") or [])
            page_token = data.get("nextPageToken") or None
            if not page_token:
                return ids

    def list_mailbox_labels(self, after: datetime | None = None) -> dict[str, list[str]]:
        """Every message of the default listing (no SPAM, no TRASH) with its labelIds, from id listings
        alone: the whole listing, then one listing per label (500 ids a call), never a `messages.get`."""
        mailbox: dict[str, list[str]] = {m: [] for m in self.list_ids_with_label(after=after)}
        for label in self.list_labels():
            if label.id in ("SPAM", "TRASH"):
                continue
            for message_id in self.list_ids_with_label(label.id, after=after):
                labels = mailbox.get(message_id)
                if labels is not None:  # arrived after the whole listing: the next sync's history has it
                    labels.append(label.id)
        return mailbox

    def list_trash_and_spam_ids(self, after: datetime | None = None) -> set[str]:
        """Ids of the messages in the trash or spam: out of the mirror, but not deleted (yet)."""
        return {
            message_id
            for label_id in ("TRASH", "SPAM")
            for message_id in self.list_ids_with_label(label_id, include_spam_trash=True, after=after)
        }

    def get_messages(self, ids: list[str]) -> list[GmailMessage]:
        """Fetch messages (format=raw) in paced, adaptive batches; result in the order of `ids`.

        Parts answered 429/5xx are retried (Retry-After honoured). Messages that no longer exist (404)
        are skipped and logged. Raises `RetriableError` for parts still failing after the last attempt.
        """
        return self._batches.fetch(ids)

    @property
    def batch_size(self) -> int:
        """The current adaptive batch size (for tests and progress details)."""
        return self._batches.batch_size
