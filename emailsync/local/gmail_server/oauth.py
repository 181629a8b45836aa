"""OAuth for the local Gmail server: Google's token endpoint (refresh_token grant) and revocation.

- `POST /token` (form-encoded `grant_type=refresh_token`, `refresh_token`, `client_id`, `client_secret`,
  optional `scope`) → `{"access_token", "expires_in", "scope", "token_type"}`; errors as Google's
  `{"error": ..., "error_description": ...}`. This is what google-auth's `Credentials.refresh` calls with
  `token_uri=<server>/token`.
- `POST /revoke?token=T` (or `token` in a form body): T is a refresh token or an access token; the whole
  grant (the refresh token and every access token issued for it) is refused from then on, as Google does.
- A grant is a refresh token. Refresh tokens made by `issue()` belong to the Gmail user named there; any
  other refresh token is accepted as a grant of its own (bound to the client id it is first used with)
  whose Gmail user is the refresh token itself, as any unknown bearer token is its own user.
- Access tokens issued here expire `access_token_ttl_seconds` after issue (401 after). Bearer tokens this
  server did not issue never expire; they are refused only once revoked.

Tokens are never put in a response text or a log line.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs

from pydantic import BaseModel

from emailsync.local.gmail_server.responses import ApiResponse, _json

TOKEN_PATH = "/token"
REVOKE_PATH = "/revoke"
DEFAULT_ACCESS_TOKEN_TTL_SECONDS = 3600.0  # Google's access tokens live one hour
DEFAULT_SCOPE = "https://www.googleapis.com/auth/gmail.readonly"


class IssuedGrant(BaseModel):
    """What a completed consent flow hands the app: tokens for one Gmail user (`user` is its key)."""

    access_token: str
    refresh_token: str
    expiry: datetime  # UTC, when `access_token` stops working
    user: str
    client_id: str | None = None
    client_secret: str | None = None
    scopes: list[str]


@dataclass
class _Grant:
    user: str
    client_id: str | None
    client_secret: str | None
    scope: str


@dataclass
class _AccessToken:
    refresh_token: str
    expires_at: float  # on the monotonic clock


def _oauth_error(status: int, error: str, description: str) -> ApiResponse:
    return ApiResponse(status=status, body=_json({"error": error, "error_description": description}))


class OAuthGrants:
    """Refresh tokens (grants), the access tokens issued for them, and revocations. Thread-safe."""

    def __init__(
        self,
        access_token_ttl_seconds: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.access_token_ttl_seconds = access_token_ttl_seconds or DEFAULT_ACCESS_TOKEN_TTL_SECONDS
        self._clock = clock
        self._lock = threading.Lock()
        self._grants: dict[str, _Grant] = {}  # refresh token → grant
        self._access_tokens: dict[str, _AccessToken] = {}
        self._revoked: set[str] = set()  # refresh tokens, and bearer tokens this server did not issue

    def reset(self) -> None:
        with self._lock:
            self._grants.clear()
            self._access_tokens.clear()
            self._revoked.clear()

    # ---------------------------------------------------------------------------- for tests and tools
    def issue(
        self,
        user: str | None = None,
        *,
        client_id: str | None = None,
        client_secret: str | None = None,
        scopes: list[str] | None = None,
    ) -> IssuedGrant:
        """A new grant, as at the end of a consent flow: a refresh token and its first access token.

        `user` is the Gmail user's key (a bearer token already in use, to keep its mailbox); default: the
        new refresh token. With `client_id`/`client_secret` set, `/token` requires the same ones.
        """
        refresh_token = "1//local-" + secrets.token_urlsafe(32)
        scope = " ".join(scopes) if scopes else DEFAULT_SCOPE
        with self._lock:
            self._grants[refresh_token] = _Grant(user or refresh_token, client_id, client_secret, scope)
            access_token, ttl = self._issue_access_token_locked(refresh_token)
        return IssuedGrant(
            access_token=access_token,
            refresh_token=refresh_token,
            expiry=datetime.now(UTC) + timedelta(seconds=ttl),
            user=user or refresh_token,
            client_id=client_id,
            client_secret=client_secret,
            scopes=scope.split(),
        )

    def revoke(self, token: str) -> bool:
        """Revoke the grant of `token` (refresh or access token, or a bearer token of its own).
        False when it was revoked or expired already (Google answers `invalid_token` then)."""
        with self._lock:
            issued = self._access_tokens.get(token)
            if issued is not None:
                if issued.expires_at <= self._clock() or issued.refresh_token in self._revoked:
                    return False
                self._revoked.add(issued.refresh_token)
                return True
            if token in self._revoked:
                return False
            self._revoked.add(token)
            return True

    # ----------------------------------------------------------------------------------- bearer use
    def user_for(self, token: str) -> str:
        """The Gmail user (mailbox key) a bearer token acts as: an issued access token → its grant's
        user; a refresh token made by `issue()` → its user; any other token → itself."""
        with self._lock:
            issued = self._access_tokens.get(token)
            grant = self._grants.get(issued.refresh_token if issued is not None else token)
            return grant.user if grant is not None else token

    def refusal(self, token: str) -> str | None:
        """Why a bearer token is refused (an error message for the 401), or None when it is good."""
        with self._lock:
            issued = self._access_tokens.get(token)
            if issued is None:
                if token in self._revoked:
                    return "Request had invalid authentication credentials. Invalid Credentials"
                if token in self._grants:  # a refresh token is no access token
                    return "Request had invalid authentication credentials. Expected OAuth 2 access token."
                return None
            if issued.refresh_token in self._revoked:
                return "Request had invalid authentication credentials. Invalid Credentials"
            if issued.expires_at <= self._clock():
                return (
                    "Request had invalid authentication credentials. Expected OAuth 2 access token, "
                    "login cookie or other valid authentication credential."
                )
            return None

    # ---------------------------------------------------------------------------------- endpoints
    def handle(self, path: str, query: str, headers: dict[str, str], body: bytes) -> ApiResponse:
        """`POST /token` or `POST /revoke` (parameters from the form body, or the query string)."""
        params = _form(query, headers, body)
        if path == TOKEN_PATH:
            return self._token(params)
        return self._revoke(params)

    def _token(self, params: dict[str, str]) -> ApiResponse:
        grant_type = params.get("grant_type", "")
        if grant_type != "refresh_token":
            return _oauth_error(400, "unsupported_grant_type", f"Invalid grant_type: {grant_type[:40]}")
        refresh_token = params.get("refresh_token", "")
        if not refresh_token:
            return _oauth_error(400, "invalid_request", "Missing required parameter: refresh_token")
        client_id = params.get("client_id", "")
        if not client_id:
            return _oauth_error(400, "invalid_request", "Could not determine client ID from request.")
        with self._lock:
            if refresh_token in self._revoked or refresh_token in self._access_tokens:
                return _oauth_error(400, "invalid_grant", "Token has been expired or revoked.")
            grant = self._grants.get(refresh_token)
            if grant is None:  # a refresh token never seen: a grant of its own, bound to this client
                grant = _Grant(refresh_token, client_id, params.get("client_secret"), DEFAULT_SCOPE)
                self._grants[refresh_token] = grant
            if grant.client_id is not None and grant.client_id != client_id:
                return _oauth_error(401, "invalid_client", "The OAuth client was not found.")
            if grant.client_secret is not None and grant.client_secret != params.get("client_secret"):
                return _oauth_error(401, "invalid_client", "Unauthorized")
            access_token, ttl = self._issue_access_token_locked(refresh_token)
        payload = {
            "access_token": access_token,
            "expires_in": int(ttl),
            "scope": params.get("scope") or grant.scope,
            "token_type": "Bearer",
        }
        return ApiResponse(status=200, body=_json(payload), headers={"Cache-Control": "no-store"})

    def _revoke(self, params: dict[str, str]) -> ApiResponse:
        token = params.get("token", "")
        if not token:
            return _oauth_error(400, "invalid_request", "Missing required parameter: token")
        if not self.revoke(token):
            return _oauth_error(400, "invalid_token", "Token expired or revoked")
        return ApiResponse(status=200, body=b"{}")

    def _issue_access_token_locked(self, refresh_token: str) -> tuple[str, float]:
        access_token = "ya29.local-" + secrets.token_urlsafe(32)
        ttl = self.access_token_ttl_seconds
        self._access_tokens[access_token] = _AccessToken(refresh_token, self._clock() + ttl)
        return access_token, ttl


def _form(query: str, headers: dict[str, str], body: bytes) -> dict[str, str]:
    """Parameters of an OAuth request: query string, then the body (form-encoded, or JSON) on top."""
    params = {key: values[0] for key, values in parse_qs(query).items()}
    if not body:
        return params
    if headers.get("content-type", "").lower().startswith("application/json"):
        try:
            decoded = json.loads(body)
        except ValueError:
            return params
        if isinstance(decoded, dict):
            params.update({key: str(value) for key, value in decoded.items()})
        return params
    text = body.decode("utf-8", errors="replace")
    params.update({key: values[0] for key, values in parse_qs(text).items()})
    return params
