"""The user-side documents of DESIGN.md: `appUsers`, `families`, `providerUsers` and
`providerCredentials` (OAuth data: never logged, never readable by clients)."""

from __future__ import annotations

from typing import Any

from google.cloud import firestore

from emailsync.errors import FatalError
from emailsync.firestore.documents import (
    APP_USERS,
    FAMILIES,
    PROVIDER_CREDENTIALS,
    PROVIDER_USERS,
    Repository,
    compare_and_set,
)
from emailsync.models import AppUser, Family, ProviderCredentials, ProviderUser


class ProviderUserRepository(Repository):
    """`providerUsers/{providerUserId}`."""

    def get(self, provider_user_id: str) -> ProviderUser | None:
        snapshot = self.client.collection(PROVIDER_USERS).document(provider_user_id).get()
        return ProviderUser.from_firestore(snapshot.to_dict()) if snapshot.exists else None

    def list_gmail_active(self) -> list[tuple[str, ProviderUser]]:
        """Every provider user whose Gmail is connected (`services.gmail.active == true`), by id."""
        query = self.client.collection(PROVIDER_USERS).where(
            filter=firestore.FieldFilter("services.gmail.active", "==", True)
        )
        users = [
            (snapshot.id, ProviderUser.from_firestore(snapshot.to_dict())) for snapshot in query.stream()
        ]
        return sorted(users, key=lambda item: item[0])

    def put(self, provider_user_id: str, user: ProviderUser) -> None:
        self.client.collection(PROVIDER_USERS).document(provider_user_id).set(user.to_firestore())

    def set_needs_reauth(self, provider_user_id: str, needs_reauth: bool) -> None:
        """`services.gmail.needsReauth`: set when the grant is revoked (with `needsReauthSince`, so a
        reconnect nobody saw happen is still recognised), cleared on reconnect."""
        document = self.client.collection(PROVIDER_USERS).document(provider_user_id)
        since = firestore.SERVER_TIMESTAMP if needs_reauth else None
        document.update(
            {"services.gmail.needsReauth": needs_reauth, "services.gmail.needsReauthSince": since}
        )


class CredentialsRepository(Repository):
    """`providerCredentials/{providerUserId}`: OAuth data. Never logged, never readable by clients."""

    def get(self, provider_user_id: str) -> ProviderCredentials:
        snapshot = self.client.collection(PROVIDER_CREDENTIALS).document(provider_user_id).get()
        if not snapshot.exists:
            raise FatalError(f"no Gmail credentials stored for provider user {provider_user_id}")
        return ProviderCredentials.from_firestore(snapshot.to_dict())

    def put(self, provider_user_id: str, credentials: ProviderCredentials) -> None:
        document = self.client.collection(PROVIDER_CREDENTIALS).document(provider_user_id)
        document.set(credentials.to_firestore(exclude_none=True))

    def save_refreshed(
        self, provider_user_id: str, refreshed: ProviderCredentials, refreshed_with: str | None
    ) -> bool:
        """Write a refreshed access token (and expiry, and a rotated refresh token) back; true if written.

        `refreshed_with` is the refresh token the refresh used. Nothing is written when the stored token
        and expiry already are these, nor when the stored grant is another one (the user reconnected
        meanwhile: their new credentials win)."""
        document = self.client.collection(PROVIDER_CREDENTIALS).document(provider_user_id)

        def decide(snapshot: firestore.DocumentSnapshot) -> dict[str, Any] | None:
            if not snapshot.exists:
                return None  # purged (disconnect): nothing to keep fresh
            stored = ProviderCredentials.from_firestore(snapshot.to_dict())
            if stored.refresh_token != refreshed_with:
                return None
            if stored.token == refreshed.token and stored.expiry == refreshed.expiry:
                return None
            update: dict[str, Any] = {"token": refreshed.token, "expiry": refreshed.expiry}
            if refreshed.refresh_token and refreshed.refresh_token != stored.refresh_token:
                update["refreshToken"] = refreshed.refresh_token
            return update

        return compare_and_set(self.client, document, decide)

    def delete(self, provider_user_id: str) -> None:
        self.client.collection(PROVIDER_CREDENTIALS).document(provider_user_id).delete()


class AppUserRepository(Repository):
    """`appUsers/{appUserId}`."""

    def get(self, app_user_id: str) -> AppUser | None:
        snapshot = self.client.collection(APP_USERS).document(app_user_id).get()
        return AppUser.from_firestore(snapshot.to_dict()) if snapshot.exists else None

    def put(self, app_user_id: str, user: AppUser) -> None:
        self.client.collection(APP_USERS).document(app_user_id).set(user.to_firestore())


class FamilyRepository(Repository):
    """`families/{familyId}`."""

    def get(self, family_id: str) -> Family | None:
        snapshot = self.client.collection(FAMILIES).document(family_id).get()
        return Family.from_firestore(snapshot.to_dict()) if snapshot.exists else None

    def put(self, family_id: str, family: Family) -> None:
        self.client.collection(FAMILIES).document(family_id).set(family.to_firestore())
