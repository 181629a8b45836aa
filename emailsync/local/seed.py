"""Seed the documents the rest of the backend creates when a person signs up and links Google.

Used by the demo, tests and benchmarks: a family with members, the app user, the provider user
(Gmail not yet connected) and its credentials (a dummy bearer token: our local Gmail server
accepts any token, and a token selects that token's mailbox there). `connect_gmail` /
`disconnect_gmail` are what the web app's "Connect Gmail" button amounts to.
"""

from __future__ import annotations

from datetime import UTC, datetime

from google.cloud import firestore
from pydantic import BaseModel

from emailsync.firestore.documents import PROVIDER_USERS
from emailsync.firestore.users import (
    AppUserRepository,
    CredentialsRepository,
    FamilyRepository,
    ProviderUserRepository,
)
from emailsync.models import (
    AppUser,
    Family,
    GmailService,
    ProviderCredentials,
    ProviderServices,
    ProviderUser,
)


class SeededAccount(BaseModel):
    """Ids of everything `seed_account` wrote."""

    family_id: str
    member_ids: list[str]
    app_user_id: str
    provider_user_id: str
    email: str
    token: str


def seed_account(
    client: firestore.Client,
    *,
    provider_user_id: str = "pu-demo",
    email: str = "alex@example.com",
    family_id: str = "family-demo",
    members: int = 2,
    token: str = "demo-token",
    gmail_active: bool = False,
) -> SeededAccount:
    """A family of `members` app users; the first one links Google (Gmail inactive unless asked)."""
    member_ids = [f"{family_id}-member-{n}" for n in range(1, members + 1)]
    app_user_id = member_ids[0]
    local, _, domain = email.partition("@")
    for n, member_id in enumerate(member_ids, start=1):
        member_email = email if member_id == app_user_id else f"{local}+{n}@{domain}"
        AppUserRepository(client).put(member_id, AppUser(email=member_email, family_id=family_id))
    FamilyRepository(client).put(family_id, Family(member_ids=member_ids))
    gmail = GmailService(active=gmail_active, connected_at=datetime.now(UTC) if gmail_active else None)
    ProviderUserRepository(client).put(
        provider_user_id,
        ProviderUser(
            app_user_id=app_user_id,
            family_id=family_id,
            email=email,
            services=ProviderServices(gmail=gmail),
        ),
    )
    CredentialsRepository(client).put(provider_user_id, ProviderCredentials(token=token))
    return SeededAccount(
        family_id=family_id,
        member_ids=member_ids,
        app_user_id=app_user_id,
        provider_user_id=provider_user_id,
        email=email,
        token=token,
    )


def connect_gmail(
    client: firestore.Client, provider_user_id: str, connected_at: datetime | None = None
) -> datetime:
    """Flip `services.gmail.active` to true with a fresh `connectedAt` (what the web app does)."""
    connected_at = connected_at or datetime.now(UTC)
    client.collection(PROVIDER_USERS).document(provider_user_id).update(
        {"services.gmail.active": True, "services.gmail.connectedAt": connected_at}
    )
    return connected_at


def disconnect_gmail(client: firestore.Client, provider_user_id: str) -> None:
    client.collection(PROVIDER_USERS).document(provider_user_id).update({"services.gmail.active": False})
