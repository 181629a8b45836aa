"""Stored OAuth data (`providerCredentials`, google-auth's authorized-user shape) as credentials that
refresh themselves and report every refreshed token (`TokenRefreshed`) to whoever persists it.

google-auth does the refreshing: before a request when the access token is about to expire, and when
Gmail answers 401 (google-auth-httplib2 for single calls, googleapiclient for batch parts). Tokens never
reach a log line or an exception message from here.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import google.oauth2.credentials
from google.auth import _helpers

from emailsync.models import ProviderCredentials

# Told about every refresh: the new `ProviderCredentials` (token, expiry, possibly a rotated refresh
# token) and the refresh token the refresh was made with.
TokenRefreshed = Callable[[ProviderCredentials, str | None], None]

# google-auth refreshes 3 min 45 s before expiry: right for Google's one-hour tokens, but a token that
# lives less than that would be refreshed before every request. Short-lived tokens are refreshed when a
# quarter of their lifetime is left instead.
_SHORT_LIFETIME_MARGIN = 0.25
# Threads that ran into the same expired token wait for one refresh instead of each making their own.
_JUST_REFRESHED_SECONDS = 1.0


def _naive_utc(moment: datetime | None) -> datetime | None:
    if moment is not None and moment.tzinfo is not None:  # google-auth compares naive UTC datetimes
        return moment.astimezone(UTC).replace(tzinfo=None)
    return moment


class RefreshingCredentials(google.oauth2.credentials.Credentials):
    """google-auth user credentials that tell `on_refresh` about every token they obtain."""

    def __init__(self, *args: Any, on_refresh: TokenRefreshed | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._on_refresh = on_refresh
        self._refresh_lock = threading.Lock()
        self._lifetime: timedelta | None = None
        self._refreshed_at = float("-inf")

    @property
    def expired(self) -> bool:
        if not self.expiry:
            return False
        margin = _helpers.REFRESH_THRESHOLD
        if self._lifetime is not None:
            margin = min(margin, self._lifetime * _SHORT_LIFETIME_MARGIN)
        return _helpers.utcnow() >= self.expiry - margin

    def refresh(self, request: Any) -> None:
        with self._refresh_lock:
            if time.monotonic() - self._refreshed_at < _JUST_REFRESHED_SECONDS and self.valid:
                return  # another thread refreshed while this one waited for the lock
            issued, refreshed_with = _helpers.utcnow(), self.refresh_token
            super().refresh(request)
            self._refreshed_at = time.monotonic()
            self._lifetime = self.expiry - issued if self.expiry else None
            if self._on_refresh is not None:
                self._on_refresh(self.stored(), refreshed_with)

    def stored(self) -> ProviderCredentials:
        """These credentials as `providerCredentials` keeps them."""
        expiry = self.expiry.replace(tzinfo=UTC) if self.expiry else None
        return ProviderCredentials(
            token=self.token or "",
            refresh_token=self.refresh_token,
            token_uri=self.token_uri,
            client_id=self.client_id,
            client_secret=self.client_secret,
            scopes=list(self.scopes or []),
            expiry=expiry,
        )

    def secrets(self) -> tuple[str | None, ...]:
        """What must never appear in a message: the current tokens and the client secret."""
        return (self.token, self.refresh_token, self.client_secret)


def google_credentials(
    credentials: ProviderCredentials, on_refresh: TokenRefreshed | None = None
) -> RefreshingCredentials:
    return RefreshingCredentials(
        token=credentials.token,
        refresh_token=credentials.refresh_token,
        token_uri=credentials.token_uri,
        client_id=credentials.client_id,
        client_secret=credentials.client_secret,
        scopes=credentials.scopes or None,
        expiry=_naive_utc(credentials.expiry),
        on_refresh=on_refresh,
    )
