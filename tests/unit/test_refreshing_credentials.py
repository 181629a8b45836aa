"""Stored credentials as google-auth credentials that refresh short-lived tokens sensibly and report
every new token (what the sync writes back to providerCredentials)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from google.auth import _helpers

from emailsync.gmail.credentials import google_credentials
from emailsync.models import ProviderCredentials


@dataclass
class _Answer:
    status: int
    data: bytes
    headers: dict[str, str]


class TokenEndpoint:
    """A token endpoint answering every refresh_token grant with a new 5-second access token."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, url: str, method: str = "GET", body: object = None, **_: object) -> _Answer:
        self.calls += 1
        payload = {"access_token": f"access-{self.calls}", "expires_in": 5, "token_type": "Bearer"}
        return _Answer(200, json.dumps(payload).encode(), {})


def stored(expiry: datetime) -> ProviderCredentials:
    return ProviderCredentials(
        token="access-0",
        refresh_token="refresh-1",
        token_uri="http://127.0.0.1:1/token",
        client_id="client",
        client_secret="secret",
        expiry=expiry,
    )


def test_a_refresh_reports_the_new_token_its_expiry_and_the_refresh_token_it_used():
    reported: list[tuple[ProviderCredentials, str | None]] = []
    expired = stored(datetime.now(UTC) - timedelta(seconds=1))
    credentials = google_credentials(expired, on_refresh=lambda c, used: reported.append((c, used)))
    assert not credentials.valid

    credentials.refresh(TokenEndpoint())

    [(fresh, used)] = reported
    assert fresh.token == "access-1" and used == "refresh-1" and fresh.refresh_token == "refresh-1"
    assert fresh.expiry is not None and fresh.expiry.tzinfo is not None
    assert timedelta(seconds=3) < fresh.expiry - datetime.now(UTC) <= timedelta(seconds=5)
    assert (fresh.client_id, fresh.client_secret, fresh.token_uri) == (
        "client",
        "secret",
        "http://127.0.0.1:1/token",
    )


def test_a_short_lived_token_is_refreshed_when_a_quarter_of_its_life_is_left_not_before_every_call(
    monkeypatch,
):
    endpoint = TokenEndpoint()
    credentials = google_credentials(stored(datetime.now(UTC) + timedelta(seconds=5)))
    # Lifetime unknown yet: google-auth's margin (3 min 45 s) applies, so a 5-second token is stale.
    assert credentials.expired
    credentials.refresh(endpoint)
    assert credentials.valid  # google-auth alone would call a fresh 5-second token expired

    issued = _helpers.utcnow()
    monkeypatch.setattr(_helpers, "utcnow", lambda: issued + timedelta(seconds=3))
    assert credentials.valid
    monkeypatch.setattr(_helpers, "utcnow", lambda: issued + timedelta(seconds=4))
    assert credentials.expired
    assert endpoint.calls == 1


def test_secrets_name_the_current_tokens_and_the_client_secret():
    credentials = google_credentials(stored(datetime.now(UTC) - timedelta(seconds=1)))
    credentials.refresh(TokenEndpoint())
    assert set(credentials.secrets()) == {"access-1", "refresh-1", "secret"}
