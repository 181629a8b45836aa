"""Stored OAuth data (`providerCredentials`, google-auth's authorized-user shape) as credentials."""

from __future__ import annotations

from datetime import UTC

import google.oauth2.credentials

from emailsync.models import ProviderCredentials


def google_credentials(credentials: ProviderCredentials) -> google.oauth2.credentials.Credentials:
    expiry = credentials.expiry
    if expiry is not None and expiry.tzinfo is not None:  # google-auth compares naive UTC datetimes
        expiry = expiry.astimezone(UTC).replace(tzinfo=None)
    return google.oauth2.credentials.Credentials(
        token=credentials.token,
        refresh_token=credentials.refresh_token,
        token_uri=credentials.token_uri,
        client_id=credentials.client_id,
        client_secret=credentials.client_secret,
        scopes=credentials.scopes or None,
        expiry=expiry,
    )
