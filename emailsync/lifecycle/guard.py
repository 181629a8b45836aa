"""`ConnectionGuard`: what one running sync does about its user's Gmail connection."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from emailsync.errors import AuthorizationRevokedError, GmailDisconnectedError
from emailsync.firestore.users import ProviderUserRepository
from emailsync.models import ProviderUser

logger = logging.getLogger(__name__)


class ConnectionGuard:
    """Made when a sync starts, from the user as it was then.

    - `check(emails_processed)` at every batch boundary: a user who was connected when the sync started
      and has disconnected since stops it (`GmailDisconnectedError`, the sync's failed document says so).
    - `watching()` around the sync: a revoked or expired grant sets `needsReauth` (no automatic sync until
      the user reconnects); a sync that worked clears a flag left from before.
    """

    def __init__(
        self, users: ProviderUserRepository, provider_user_id: str, user: ProviderUser | None
    ) -> None:
        self.users = users
        self.provider_user_id = provider_user_id
        self.was_connected = bool(user and user.gmail_active)
        self.needed_reauth = bool(user and user.gmail_needs_reauth)

    @classmethod
    def load(cls, provider_user_id: str, users: ProviderUserRepository | None = None) -> ConnectionGuard:
        """The guard of a sync starting now. A failed read must not stop the sync before it reports
        anything: the guard then watches nothing (no disconnect check, no flag to clear)."""
        users = users or ProviderUserRepository()
        try:
            user = users.get(provider_user_id)
        except Exception as exc:
            logger.warning("could not read providerUsers/%s: %s", provider_user_id, exc)
            user = None
        return cls(users, provider_user_id, user)

    def check(self, emails_processed: int) -> None:
        """Raise `GmailDisconnectedError` when Gmail was disconnected since the sync started."""
        if not self.was_connected:
            return  # a manual sync of a user who was not connected: nothing to notice
        try:
            user = self.users.get(self.provider_user_id)
        except Exception as exc:  # one unanswered read must not fail a sync: the next boundary asks again
            logger.warning("could not read providerUsers/%s: %s", self.provider_user_id, exc)
            return
        if user is None or not user.gmail_active:
            logger.info("Gmail of %s was disconnected: stopping the sync", self.provider_user_id)
            raise GmailDisconnectedError(emails_processed)

    @contextlib.contextmanager
    def watching(self) -> Iterator[ConnectionGuard]:
        try:
            yield self
        except AuthorizationRevokedError:
            self._set_needs_reauth(True)
            raise
        if self.needed_reauth:
            self._set_needs_reauth(False)

    def _set_needs_reauth(self, value: bool) -> None:
        try:
            self.users.set_needs_reauth(self.provider_user_id, value)
            logger.info("providerUsers/%s: services.gmail.needsReauth = %s", self.provider_user_id, value)
        except Exception as exc:
            logger.warning("could not set needsReauth of %s: %s", self.provider_user_id, exc)
