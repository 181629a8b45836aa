"""OAuth on the local Gmail server, driven by google-auth and google-api-python-client over real HTTP:
refresh through `POST /token`, access tokens that expire, and revocation through `POST /revoke`."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from google.auth.exceptions import RefreshError
from google.auth.transport.requests import Request
from google.oauth2.credentials import Credentials
from googleapiclient.discovery import Resource
from typer.testing import CliRunner

from emailsync.cli import app
from emailsync.cli.console import EXIT_BAD_INPUT
from emailsync.local.gmail_server.oauth import IssuedGrant
from emailsync.local.gmail_server.server import GmailApiServer
from emailsync.local.mailbox import Mailbox
from tests.fixtures.gmail import gmail_api

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("gmail_server_keeps_contract")]

CLIENT_ID = "local-client.apps.googleusercontent.com"
CLIENT_SECRET = "local-client-secret"
ONE_MESSAGE = (
    b"From: Alice <alice@example.org>\r\nTo: me@example.com\r\nSubject: Only this one\r\n"
    b"Message-ID: <only-1@example.org>\r\nDate: Wed, 25 Nov 2026 10:00:00 +0000\r\n\r\nHello\r\n"
)


def refreshing_credentials(
    server: GmailApiServer, grant: IssuedGrant, token: str | None = None
) -> Credentials:
    """What emailsync builds from providerCredentials: google-auth refreshes it through `/token`."""
    return Credentials(
        token=token,
        refresh_token=grant.refresh_token,
        token_uri=server.token_uri,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
    )


def gmail(server: GmailApiServer, credentials: Credentials) -> Resource:
    return gmail_api(server, credentials)


def profile(server: GmailApiServer, credentials: Credentials) -> dict[str, Any]:
    return gmail(server, credentials).users().getProfile(userId="me").execute()


def profile_status(server: GmailApiServer, bearer_token: str) -> int:
    """getProfile's HTTP status for a bare bearer token (no client that could refresh it on a 401)."""
    url = server.url + "gmail/v1/users/me/profile"
    return requests.get(url, headers={"Authorization": f"Bearer {bearer_token}"}, timeout=10).status_code


def test_google_auth_refresh_gets_an_access_token_of_the_same_gmail_user(
    gmail_server: GmailApiServer,
) -> None:
    gmail_server.add_mailbox("alice", Mailbox.from_raw_messages([ONE_MESSAGE]))
    grant = gmail_server.issue_grant("alice", client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    credentials = refreshing_credentials(gmail_server, grant)

    credentials.refresh(Request())

    assert credentials.token and credentials.token != grant.access_token
    assert credentials.token.startswith("ya29.")
    assert credentials.expiry is not None
    assert credentials.expiry > datetime.now(UTC).replace(tzinfo=None) + timedelta(minutes=55)
    assert profile(gmail_server, credentials)["messagesTotal"] == 1  # alice's mailbox, not the default
    assert profile(gmail_server, Credentials(token=grant.access_token))["messagesTotal"] == 1
    assert gmail_server.stats.token_refreshes == 1


def test_an_expired_token_is_refreshed_by_the_client_before_the_call(gmail_server: GmailApiServer) -> None:
    grant = gmail_server.issue_grant(client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    credentials = refreshing_credentials(gmail_server, grant, token="an-old-token")
    credentials.expiry = datetime.now(UTC).replace(tzinfo=None) - timedelta(minutes=1)

    assert profile(gmail_server, credentials)["messagesTotal"] == 300

    assert credentials.token != "an-old-token" and not credentials.expired
    assert gmail_server.stats.token_refreshes == 1


def test_an_issued_access_token_is_refused_after_its_ttl_and_the_client_refreshes_on_the_401(
    make_gmail_server: Callable[..., GmailApiServer],
) -> None:
    server = make_gmail_server(access_token_ttl_seconds=3)
    grant = server.issue_grant(client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    # token known, expiry unknown to the client: it learns of the expiry from the 401, as after a restart
    refreshing = refreshing_credentials(server, grant, token=grant.access_token)
    assert profile_status(server, grant.access_token) == 200

    time.sleep(3.2)

    assert profile_status(server, grant.access_token) == 401
    assert profile(server, refreshing)["messagesTotal"] == 300  # 401 → refresh → retried
    assert refreshing.token != grant.access_token
    # google-auth treats a token as expired 3m45s early, so a 3 s token is refreshed again before use
    assert server.stats.token_refreshes >= 1
    # tokens this server did not issue have no expiry
    assert profile_status(server, "never-issued") == 200


def test_token_endpoint_answers_expires_in_and_scope_like_google(
    make_gmail_server: Callable[..., GmailApiServer],
) -> None:
    server = make_gmail_server(access_token_ttl_seconds=5)
    grant = server.issue_grant(client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    form = {
        "grant_type": "refresh_token",
        "refresh_token": grant.refresh_token,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "scope": "https://www.googleapis.com/auth/gmail.modify",
    }

    answer = requests.post(server.token_uri, data=form, timeout=10)

    assert answer.status_code == 200
    body = answer.json()
    assert set(body) == {"access_token", "expires_in", "scope", "token_type"}
    assert body["expires_in"] == 5 and body["token_type"] == "Bearer"
    assert body["scope"] == "https://www.googleapis.com/auth/gmail.modify"


def test_revoking_the_refresh_token_refuses_its_access_tokens_and_every_refresh(
    gmail_server: GmailApiServer,
) -> None:
    grant = gmail_server.issue_grant(client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    credentials = refreshing_credentials(gmail_server, grant)
    credentials.refresh(Request())
    refreshed = credentials.token

    revoked = requests.post(gmail_server.url + "revoke", params={"token": grant.refresh_token}, timeout=10)

    assert revoked.status_code == 200
    assert profile_status(gmail_server, grant.access_token) == 401
    assert profile_status(gmail_server, refreshed) == 401
    with pytest.raises(RefreshError) as refresh_refused:
        credentials.refresh(Request())
    assert "invalid_grant" in str(refresh_refused.value)
    assert grant.refresh_token not in str(refresh_refused.value)
    # the API path: the client's refresh on the 401 fails the same way, nothing is served
    with pytest.raises(RefreshError, match="invalid_grant"):
        profile(gmail_server, refreshing_credentials(gmail_server, grant, token=refreshed))
    again = requests.post(gmail_server.url + "revoke", params={"token": grant.refresh_token}, timeout=10)
    assert again.status_code == 400 and again.json()["error"] == "invalid_token"


def test_revoking_an_access_token_revokes_its_whole_grant(gmail_server: GmailApiServer) -> None:
    grant = gmail_server.issue_grant(client_id=CLIENT_ID, client_secret=CLIENT_SECRET)

    revoked = requests.post(
        gmail_server.url + "revoke", data={"token": grant.access_token}, timeout=10
    )  # form body, as google-auth's revoke helpers send it

    assert revoked.status_code == 200
    with pytest.raises(RefreshError, match="invalid_grant"):
        refreshing_credentials(gmail_server, grant).refresh(Request())


def test_a_revoked_grant_leaves_the_same_users_other_grants_working(gmail_server: GmailApiServer) -> None:
    old = gmail_server.issue_grant("bob", client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    gmail_server.revoke(old.refresh_token)

    reconnected = gmail_server.issue_grant("bob", client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    credentials = refreshing_credentials(gmail_server, reconnected)
    credentials.refresh(Request())

    assert profile(gmail_server, credentials)["messagesTotal"] == 300
    assert gmail_server.user_key(credentials.token) == "bob"


def test_token_endpoint_errors_are_shaped_like_googles(gmail_server: GmailApiServer) -> None:
    grant = gmail_server.issue_grant(client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    good = {"grant_type": "refresh_token", "refresh_token": grant.refresh_token, "client_id": CLIENT_ID}

    def post(**changes: str) -> requests.Response:
        form = {**good, "client_secret": CLIENT_SECRET, **changes}
        return requests.post(gmail_server.token_uri, data={k: v for k, v in form.items() if v}, timeout=10)

    cases = {
        "unsupported_grant_type": post(grant_type="authorization_code"),
        "invalid_request": post(client_id=""),
        "invalid_client": post(client_secret="wrong"),
    }

    for error, answer in cases.items():
        assert answer.status_code in (400, 401)
        assert answer.json()["error"] == error
        assert grant.refresh_token not in answer.text
    assert post().status_code == 200


def test_a_refresh_token_the_server_never_issued_is_a_gmail_user_of_its_own(
    gmail_server: GmailApiServer,
) -> None:
    grant = IssuedGrant(
        access_token="", refresh_token="made-up-refresh-token", expiry=datetime.now(UTC), user="", scopes=[]
    )
    credentials = refreshing_credentials(gmail_server, grant)

    credentials.refresh(Request())

    assert gmail_server.user_key(credentials.token) == "made-up-refresh-token"
    assert profile(gmail_server, credentials)["messagesTotal"] == 300
    assert profile_status(gmail_server, "made-up-refresh-token") == 401  # a refresh token is no access token


def test_cli_rejects_a_non_positive_access_token_ttl_in_one_line() -> None:
    result = CliRunner().invoke(
        app, ["gmail-server", "--mbox", "samples/sample.mbox", "--access-token-ttl-seconds", "0"]
    )

    assert result.exit_code == EXIT_BAD_INPUT
    assert "--access-token-ttl-seconds must be positive" in result.output
