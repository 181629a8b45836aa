"""Quota-aware Gmail client over google-api-python-client: paced, batched, retried, classified.

- One discovery service per client; the `users().messages()` / `users().history()` resources are kept
  (building them per call dominates client CPU).
- Pacing: every call spends its quota units from the user's shared `TokenBucket` before it is sent.
- Retries are ours (one policy, `RetryPolicy`): `num_retries` ignores Retry-After and batches never
  retry; one retry path (`GmailRetrier.run` in `retry.py`) serves single calls and batch parts. HTTP
  errors are classified by `classify_http_error` (`http_errors.py`) through the one table in
  `emailsync/errors.py`.
- Tokens never reach a log line or an exception message.

httplib2 connections are not thread-safe, so each thread using a client gets its own connection; the
pacing bucket is shared by every thread and every client of the same user, so they respect one quota.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import google_auth_httplib2
import httplib2
from google.auth.exceptions import RefreshError, TransportError
from googleapiclient.discovery import build
from googleapiclient.errors import HttpError
from googleapiclient.http import BatchHttpRequest

from emailsync.config import Settings, get_settings
from emailsync.errors import (
    AuthorizationRevokedError,
    EmailSyncError,
    FatalError,
    RetriableError,
)
from emailsync.gmail import settings as gmail_settings
from emailsync.gmail.credentials import TokenRefreshed, google_credentials
from emailsync.gmail.http_errors import classify_http_error, is_rate_limit, scrub
from emailsync.gmail.pacing import Sleep, TokenBucket, shared_bucket
from emailsync.gmail.retry import GmailRetrier
from emailsync.gmail.settings import DEFAULT_RETRY_POLICY, RetryPolicy
from emailsync.gmail.types import (
    HISTORY_TYPES,
    ClientStats,
    GmailLabel,
    GmailMessage,
    GmailProfile,
    HistoryChange,
    HistoryChanges,
    HistoryPage,
    MessagePage,
)
from emailsync.models import ProviderCredentials

logger = logging.getLogger(__name__)

# Network trouble: timeouts, resets, refused connections (OSError covers socket.timeout and ConnectionError).
# RFC 6749: a refused grant (invalid_grant, invalid_client, ...) is answered 400.
OAUTH_ERROR_STATUS = 400
_TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (httplib2.HttpLib2Error, TransportError, OSError)


__all__ = [
    "ClientStats",
    "GmailClient",
    "GmailLabel",
    "GmailMessage",
    "GmailProfile",
    "HistoryChange",
    "HistoryChanges",
    "HistoryPage",
    "MessagePage",
    "classify_http_error",
]


# ------------------------------------------------------------------------------------------ client


def _epoch_seconds(moment: datetime) -> int:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


@dataclass
class _BatchOutcome:
    fetched: dict[str, GmailMessage]
    failed: dict[str, EmailSyncError]
    missing: list[str]


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
        self._settings = settings or get_settings()
        self._sleep_fn = sleep
        self._costs = self._settings.quota_costs
        self._stored_secrets = (credentials.token, credentials.refresh_token, credentials.client_secret)
        self._on_token_refresh = on_token_refresh
        self.stats = ClientStats()

        endpoint = self._settings.gmail_api_endpoint
        if endpoint and not endpoint.endswith("/"):
            endpoint += "/"
        self._batch_uri = (
            endpoint + gmail_settings.BATCH_PATH if endpoint else gmail_settings.GOOGLE_BATCH_URI
        )
        self._google_credentials = google_credentials(credentials, on_refresh=self._token_refreshed)
        self._thread_http = threading.local()
        self._service = build(
            "gmail",
            "v1",
            http=self._http(),
            static_discovery=True,
            cache_discovery=False,
            client_options={"api_endpoint": endpoint} if endpoint else None,
        )
        users = self._service.users()
        self._users = users
        self._messages = users.messages()
        self._history = users.history()

        self._bucket = bucket or shared_bucket(
            endpoint or "https://gmail.googleapis.com/",
            credentials.refresh_token or credentials.token,  # one user across refreshed access tokens
            self._settings.quota_units_per_second,
        )
        self._retrier = GmailRetrier(retry_policy, self._bucket, self.stats, sleep)
        # A batch must fit in the bucket's burst: the server's own bucket holds about one second of units,
        # and a batch bigger than that is partly refused however well it is paced.
        fits = int(self._bucket.capacity // max(self._costs.messages_get, 1))
        self._max_batch = max(gmail_settings.MIN_BATCH_SIZE, min(gmail_settings.MAX_BATCH_SIZE, fits))
        self._batch_size = min(gmail_settings.INITIAL_BATCH_SIZE, self._max_batch)

    # ----------------------------------------------------------------------------------- public API

    def get_profile(self) -> GmailProfile:
        data = self._call(self._users.getProfile(userId="me"), self._costs.get_profile, "users.getProfile")
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
        data = self._call(self._messages.list(**params), self._costs.messages_list, "messages.list")
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
        for _ in range(3):
            page = self.list_messages(before=before, max_results=1)
            if not page.ids:
                return None
            request = self._messages.get(userId="me", id=page.ids[0], format="minimal")
            data = self._execute(request, self._costs.messages_get, "messages.get", allow_missing=True)
            if data is not None:
                return datetime.fromtimestamp(int(data.get("internalDate") or 0) / 1000, tz=UTC)
            # deleted between the two calls: ask again
        # Saying "nothing older" here would end a backfill early; let the caller retry later instead.
        raise RetriableError("messages.list/get: the newest older message keeps disappearing")

    def list_history_page(self, start_history_id: str, page_token: str | None = None) -> HistoryPage:
        """One page of every change since `start_history_id` (all four record types, history order).

        404 (the id is older than Gmail keeps history) → `HistoryExpiredError`."""
        params: dict[str, Any] = {
            "userId": "me",
            "startHistoryId": str(start_history_id),
            "historyTypes": list(HISTORY_TYPES),
            "maxResults": gmail_settings.MAX_HISTORY_PAGE_SIZE,
        }
        if page_token:
            params["pageToken"] = page_token
        data = self._call(self._history.list(**params), self._costs.history_list, "history.list")
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
        labels = self._users.labels()
        data = self._call(labels.list(userId="me"), self._costs.labels_list, "labels.list")
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
            data = self._call(self._messages.list(**params), self._costs.messages_list, "messages.list")
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
        unique = list(dict.fromkeys(ids))
        fetched: dict[str, GmailMessage] = {}
        pending = unique

        def attempt_pending(attempt: int) -> list[EmailSyncError]:
            nonlocal pending
            failed: dict[str, EmailSyncError] = {}
            start = 0
            while start < len(pending):
                chunk = pending[start : start + self._batch_size]
                start += len(chunk)
                outcome = self._fetch_batch(chunk)
                fetched.update(outcome.fetched)
                failed.update(outcome.failed)
            pending = [message_id for message_id in pending if message_id in failed]
            return list(failed.values())

        def exhausted(attempt: int, errors: list[EmailSyncError]) -> EmailSyncError:
            first = errors[0]
            return RetriableError(
                f"{len(errors)} of {len(unique)} messages failing after {attempt} attempts: {first}",
                retry_after=getattr(first, "retry_after", None),
                status=getattr(first, "status", None),
            )

        self._retrier.run(attempt_pending, exhausted)
        return [fetched[message_id] for message_id in ids if message_id in fetched]

    @property
    def batch_size(self) -> int:
        """The current adaptive batch size (for tests and progress details)."""
        return self._batch_size

    # ----------------------------------------------------------------------------------- internals

    @property
    def _secrets(self) -> tuple[str | None, ...]:
        """Every token this client has held (refreshes add new ones): scrubbed from every message."""
        return (*self._stored_secrets, *self._google_credentials.secrets())

    def _token_refreshed(self, refreshed: ProviderCredentials, refreshed_with: str | None) -> None:
        self.stats.token_refreshes += 1
        logger.info("Gmail access token refreshed (valid until %s)", refreshed.expiry)
        if self._on_token_refresh is None:
            return
        try:
            self._on_token_refresh(refreshed, refreshed_with)
        except Exception as exc:  # the new token works in memory; the next sync refreshes again
            logger.warning(
                "could not save the refreshed Gmail token: %s",
                scrub(f"{type(exc).__name__}: {exc}", self._secrets)[:200],
            )

    def _classify(self, exc: BaseException, operation: str) -> EmailSyncError:
        if isinstance(exc, EmailSyncError):
            return exc
        if isinstance(exc, HttpError) and exc.resp is None:  # BatchError: the batch answer was unreadable
            return RetriableError(f"{operation}: {scrub(str(exc), self._secrets)[:200]}")
        if isinstance(exc, HttpError):
            return classify_http_error(
                exc.resp.status, exc.content, exc.resp, operation=operation, secrets=self._secrets
            )
        if isinstance(exc, RefreshError) and getattr(exc, "retryable", False):  # token endpoint 5xx/429
            return RetriableError(f"{operation}: token refresh failed temporarily")
        if isinstance(exc, RefreshError):
            return self._classify_refresh_error(exc, operation)
        if isinstance(exc, _TRANSPORT_ERRORS):
            return RetriableError(
                f"{operation}: {type(exc).__name__}: {scrub(str(exc), self._secrets)[:200]}"
            )
        return FatalError(
            f"{operation}: unexpected {type(exc).__name__}: {scrub(str(exc), self._secrets)[:200]}"
        )

    def _classify_refresh_error(self, exc: RefreshError, operation: str) -> EmailSyncError:
        """The token endpoint refused a refresh: its OAuth error (`invalid_grant` = revoked or expired
        grant) resolved through the one table. No answer at all means the stored credentials cannot be
        refreshed (no refresh token): the access token was refused or expired, as a 401."""
        answer = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], dict) else None
        if answer and answer.get("error"):
            body = json.dumps({key: answer.get(key) for key in ("error", "error_description")})
            return classify_http_error(
                OAUTH_ERROR_STATUS, body, operation=f"{operation} (token refresh)", secrets=self._secrets
            )
        detail = scrub(str(exc.args[0]) if exc.args else type(exc).__name__, self._secrets)[:200]
        return classify_http_error(
            401, detail, operation=f"{operation} (token refresh)", secrets=self._secrets
        )

    def _http(self) -> google_auth_httplib2.AuthorizedHttp:
        """This thread's authorized connection (httplib2 must not be shared between threads)."""
        http = getattr(self._thread_http, "http", None)
        if http is None:
            http = google_auth_httplib2.AuthorizedHttp(
                self._google_credentials, http=httplib2.Http(timeout=gmail_settings.HTTP_TIMEOUT_SECONDS)
            )
            self._thread_http.http = http
        return http

    def _pace(self, units: float) -> None:
        wait = self._bucket.reserve(units)
        if wait > 0:
            self.stats.paced_seconds += wait
            self._sleep_fn(wait)

    def _call(self, request: Any, cost: int, operation: str) -> dict[str, Any]:
        data = self._execute(request, cost, operation)
        assert data is not None  # only `allow_missing` calls answer None
        return data

    def _execute(
        self, request: Any, cost: int, operation: str, *, allow_missing: bool = False
    ) -> dict[str, Any] | None:
        """Execute one non-batch request with pacing and the retry policy (None: 404 and `allow_missing`)."""
        answer: list[dict[str, Any] | None] = []
        causes: list[BaseException] = []

        def attempt_call(attempt: int) -> list[EmailSyncError]:
            self._pace(cost)
            self.stats.http_requests += 1
            self.stats.calls += 1
            try:
                answer.append(request.execute(http=self._http(), num_retries=0))
                return []
            except Exception as exc:
                if (
                    allow_missing
                    and isinstance(exc, HttpError)
                    and exc.resp is not None
                    and exc.resp.status == 404
                ):
                    answer.append(None)
                    return []
                error = self._classify(exc, operation)
                if not isinstance(error, RetriableError):
                    raise error from (None if isinstance(error, AuthorizationRevokedError) else exc)
                self._retrier.count_failure(error)
                if is_rate_limit(error):
                    self._retrier.pause_for_rate_limit(attempt, [error])
                causes.append(exc)
                return [error]

        def exhausted(attempt: int, errors: list[EmailSyncError]) -> EmailSyncError:
            errors[0].__cause__ = causes[-1]
            return errors[0]

        self._retrier.run(attempt_call, exhausted)
        return answer[-1]

    def _fetch_batch(self, chunk: list[str]) -> _BatchOutcome:
        outcome = _BatchOutcome(fetched={}, failed={}, missing=[])

        def on_part(request_id: str, response: Any, exception: BaseException | None) -> None:
            if exception is None:
                try:
                    outcome.fetched[request_id] = GmailMessage.from_api(response)
                except (KeyError, ValueError, TypeError) as exc:
                    outcome.failed[request_id] = RetriableError(
                        f"messages.get {request_id}: bad answer ({exc})"
                    )
                return
            if (
                isinstance(exception, HttpError)
                and exception.resp is not None
                and exception.resp.status == 404
            ):
                outcome.missing.append(request_id)
                return
            outcome.failed[request_id] = self._classify(exception, f"messages.get {request_id}")

        self._pace(self._costs.messages_get * len(chunk))
        # Built directly: the service's new_batch_http_request() ignores api_endpoint and takes no batch_uri.
        batch = BatchHttpRequest(callback=on_part, batch_uri=self._batch_uri)
        for message_id in chunk:
            batch.add(self._messages.get(userId="me", id=message_id, format="raw"), request_id=message_id)
        self.stats.http_requests += 1
        self.stats.calls += len(chunk)
        try:
            batch.execute(http=self._http())
        except Exception as exc:  # the batch request as a whole failed: every part not answered fails with it
            error = self._classify(exc, "batch messages.get")
            if not isinstance(error, RetriableError):
                raise error from (None if isinstance(error, AuthorizationRevokedError) else exc)
            for message_id in chunk:
                if message_id not in outcome.fetched and message_id not in outcome.missing:
                    outcome.failed[message_id] = error

        for error in outcome.failed.values():
            if not isinstance(error, RetriableError):
                raise error
        for error in outcome.failed.values():
            self._retrier.count_failure(error)
        rate_limited = [e for e in outcome.failed.values() if is_rate_limit(e)]
        if rate_limited:
            self._retrier.pause_for_rate_limit(1, rate_limited)
        if outcome.missing:
            self.stats.not_found += len(outcome.missing)
            logger.warning(
                "skipping %d messages that no longer exist: %s", len(outcome.missing), outcome.missing
            )
        self._adapt_batch_size(bool(rate_limited))
        return outcome

    def _adapt_batch_size(self, rate_limited: bool) -> None:
        if rate_limited:
            self._batch_size = max(gmail_settings.MIN_BATCH_SIZE, self._batch_size // 2)
        else:
            self._batch_size = min(self._max_batch, self._batch_size + gmail_settings.BATCH_GROWTH_STEP)
