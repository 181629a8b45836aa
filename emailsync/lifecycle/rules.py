"""Whether an automatic trigger may start a sync for a provider user (pure)."""

from __future__ import annotations

from emailsync.models import ProviderUser

NOT_CONNECTED = "Gmail is not connected"
NEEDS_REAUTH = "Gmail authorization revoked or expired: waiting for the user to reconnect Gmail"


def automatic_sync_blocked(user: ProviderUser | None) -> str | None:
    """Why no sweep, schedule, watcher catch-up or push may start a sync for `user`; None if one may.

    A revoked or expired grant (`needsReauth`) would only fail again, every time: the user is left alone
    until they reconnect. A connect clears the flag; a `connectedAt` later than `needsReauthSince` is a
    reconnect too (made while no watcher saw it), and the sync that then works clears the flag.
    Manual syncs (`emailsync sync`) do not ask."""
    if user is None or not user.gmail_active:
        return NOT_CONNECTED
    gmail = user.services.gmail
    if gmail.needs_reauth:
        since, connected = gmail.needs_reauth_since, gmail.connected_at
        if since is None or connected is None or connected <= since:
            return NEEDS_REAUTH
    return None
