"""One user's paced, retried access to the Gmail API, which every call of `GmailClient` goes through.

- One discovery service per connection; the `users()`, `users().messages()` and `users().history()`
  resources are kept (building them per call dominates client CPU).
- Pacing: every call spends its quota units from the user's shared `TokenBucket` before it is sent.
- Retries are ours (one policy, `RetryPolicy`): `num_retries` ignores Retry-After and batches never
  retry; one retry path (`GmailRetrier.run` in `retry.py`) serves single calls and batch parts.
  Failures are classified by `classify_call_error` (`http_errors.py`) through the one table in
  `emailsync/errors.py`.
- Tokens never reach a log line or an exception message: `secrets` are scrubbed from every one.

httplib2 connections are not thread-safe, so each thread gets its own HTTP connection; the pacing
bucket is shared by every thread and every client of the same user, so they respect one quota.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import google_auth_httplib2
import httplib2
from googleapiclient.discovery import build

from emailsync.config import Settings
from emailsync.errors import AuthorizationRevokedError, EmailSyncError, RetriableError
from emailsync.gmail import settings as gmail_settings
from emailsync.gmail.credentials import TokenRefreshed, google_credentials
from emailsync.gmail.http_errors import classify_call_error, is_not_found, is_rate_limit, scrub
from emailsync.gmail.pacing import Sleep, TokenBucket, shared_bucket
from emailsync.gmail.retry import GmailRetrier
from emailsync.gmail.settings import RetryPolicy
from emailsync.gmail.types import ClientStats
from emailsync.models import ProviderCredentials

logger = logging.getLogger(__name__)


def raise_unless_retriable(error: EmailSyncError, cause: BaseException) -> None:
    """A fatal error ends the call at once (a revoked grant is raised without the exception below it)."""
    if not isinstance(error, RetriableError):
        raise error from (None if isinstance(error, AuthorizationRevokedError) else cause)


class GmailConnection:
    """The Gmail API for one user: endpoints, resources, per-thread HTTP, pacing, retries and stats."""

    def __init__(
        self,
        credentials: ProviderCredentials,
        settings: Settings,
        *,
        retry_policy: RetryPolicy,
        bucket: TokenBucket | None,
        sleep: Sleep,
        on_token_refresh: TokenRefreshed | None,
    ) -> None:
        """`on_token_refresh` receives the credentials after every token refresh (to persist them)."""
        self.costs = settings.quota_costs
        self.stats = ClientStats()
        self._sleep_fn = sleep
        self._stored_secrets = (credentials.token, credentials.refresh_token, credentials.client_secret)
        self._on_token_refresh = on_token_refresh

        endpoint = settings.gmail_api_endpoint
        if endpoint and not endpoint.endswith("/"):
            endpoint += "/"
        self.batch_uri = endpoint + gmail_settings.BATCH_PATH if endpoint else gmail_settings.GOOGLE_BATCH_URI
        self._google_credentials = google_credentials(credentials, on_refresh=self._token_refreshed)
        self._thread_http = threading.local()
        service = build(
            "gmail",
            "v1",
            http=self.http(),
            static_discovery=True,
            cache_discovery=False,
            client_options={"api_endpoint": endpoint} if endpoint else None,
        )
        self.users = service.users()
        self.messages = self.users.messages()
        self.history = self.users.history()

        self.bucket = bucket or shared_bucket(
            endpoint or "https://gmail.googleapis.com/",
            credentials.refresh_token or credentials.token,  # one user across refreshed access tokens
            settings.quota_units_per_second,
        )
        self.retrier = GmailRetrier(retry_policy, self.bucket, self.stats, sleep)

    @property
    def secrets(self) -> tuple[str | None, ...]:
        """Every token this connection has held (refreshes add new ones): scrubbed from every message."""
        return (*self._stored_secrets, *self._google_credentials.secrets())

    def classify(self, exc: BaseException, operation: str) -> EmailSyncError:
        return classify_call_error(exc, operation, self.secrets)

    def http(self) -> google_auth_httplib2.AuthorizedHttp:
        """This thread's authorized connection (httplib2 must not be shared between threads)."""
        http = getattr(self._thread_http, "http", None)
        if http is None:
            http = google_auth_httplib2.AuthorizedHttp(
                self._google_credentials, http=httplib2.Http(timeout=gmail_settings.HTTP_TIMEOUT_SECONDS)
            )
            self._thread_http.http = http
        return http

    def pace(self, units: float) -> None:
        """Wait until the user's bucket holds `units` quota units, and spend them."""
        wait = self.bucket.reserve(units)
        if wait > 0:
            self.stats.paced_seconds += wait
            self._sleep_fn(wait)

    def call(self, request: Any, cost: int, operation: str) -> dict[str, Any]:
        """Execute one non-batch request (paced and retried); its JSON answer."""
        data = self.execute(request, cost, operation)
        assert data is not None  # only `allow_missing` calls answer None
        return data

    def execute(
        self, request: Any, cost: int, operation: str, *, allow_missing: bool = False
    ) -> dict[str, Any] | None:
        """Execute one non-batch request with pacing and the retry policy (None: 404 and `allow_missing`)."""
        answer: list[dict[str, Any] | None] = []
        causes: list[BaseException] = []

        def attempt_call(attempt: int) -> list[EmailSyncError]:
            self.pace(cost)
            self.stats.http_requests += 1
            self.stats.calls += 1
            try:
                answer.append(request.execute(http=self.http(), num_retries=0))
                return []
            except Exception as exc:
                if allow_missing and is_not_found(exc):
                    answer.append(None)
                    return []
                error = self.classify(exc, operation)
                raise_unless_retriable(error, exc)
                self.retrier.count_failure(error)
                if is_rate_limit(error):
                    self.retrier.pause_for_rate_limit(attempt, [error])
                causes.append(exc)
                return [error]

        def exhausted(attempt: int, errors: list[EmailSyncError]) -> EmailSyncError:
            errors[0].__cause__ = causes[-1]
            return errors[0]

        self.retrier.run(attempt_call, exhausted)
        return answer[-1]

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
                scrub(f"{type(exc).__name__}: {exc}", self.secrets)[:200],
            )
