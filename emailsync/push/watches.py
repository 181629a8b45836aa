"""Gmail watches kept alive: registered on connect, renewed well before they expire, re-created once
lapsed, stopped on disconnect.

Each registration is kept in `syncState/{providerUserId}` (no client reads it):
`gmailWatch {topicName, historyId, expiration, registeredAt}` and `gmailAddress`, the address Gmail's
profile reports for the user, which is how a notification (`emailAddress`) finds its provider user.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter
from pydantic import BaseModel, Field

from emailsync.config import Settings, get_settings
from emailsync.errors import describe_error
from emailsync.firestore.documents import SYNC_STATE
from emailsync.firestore.users import CredentialsRepository, ProviderUserRepository
from emailsync.gmail.watch import GmailWatchClient
from emailsync.lifecycle.rules import automatic_sync_blocked
from emailsync.push.pubsub import ensure_topic

logger = logging.getLogger("emailsync.push")

WATCH_FIELD = "gmailWatch"
ADDRESS_FIELD = "gmailAddress"


class StoredWatch(BaseModel):
    topic_name: str
    history_id: str | None = None
    expiration: datetime
    registered_at: datetime

    def to_firestore(self) -> dict[str, Any]:
        return {
            "topicName": self.topic_name,
            "historyId": self.history_id,
            "expiration": self.expiration,
            "registeredAt": self.registered_at,
        }

    @classmethod
    def from_firestore(cls, data: Any) -> StoredWatch | None:
        if not isinstance(data, dict) or not data.get("expiration"):
            return None
        return cls(
            topic_name=str(data.get("topicName") or ""),
            history_id=data.get("historyId"),
            expiration=data["expiration"],
            registered_at=data.get("registeredAt") or data["expiration"],
        )


def normalize_address(address: str) -> str:
    return address.strip().lower()


class WatchRepository:
    """The watch fields of `syncState` (merged in: the sync's own fields are left alone)."""

    def __init__(self, client: firestore.Client) -> None:
        self.client = client

    def _document(self, provider_user_id: str) -> firestore.DocumentReference:
        return self.client.collection(SYNC_STATE).document(provider_user_id)

    def get(self, provider_user_id: str) -> StoredWatch | None:
        snapshot = self._document(provider_user_id).get([WATCH_FIELD])
        return (
            StoredWatch.from_firestore((snapshot.to_dict() or {}).get(WATCH_FIELD))
            if snapshot.exists
            else None
        )

    def all(self) -> dict[str, StoredWatch]:
        """Every stored watch, by provider user id."""
        watches = {}
        for snapshot in self.client.collection(SYNC_STATE).select([WATCH_FIELD]).stream():
            watch = StoredWatch.from_firestore((snapshot.to_dict() or {}).get(WATCH_FIELD))
            if watch is not None:
                watches[snapshot.id] = watch
        return watches

    def save(self, provider_user_id: str, watch: StoredWatch, address: str) -> None:
        self._document(provider_user_id).set(
            {WATCH_FIELD: watch.to_firestore(), ADDRESS_FIELD: normalize_address(address)}, merge=True
        )

    def clear(self, provider_user_id: str) -> None:
        self._document(provider_user_id).set({WATCH_FIELD: None}, merge=True)

    def provider_user_for(self, address: str) -> str | None:
        """The provider user whose Gmail profile reported `address` (None: nobody we know)."""
        query = (
            self.client.collection(SYNC_STATE)
            .where(filter=FieldFilter(ADDRESS_FIELD, "==", normalize_address(address)))
            .limit(2)
        )
        ids = [snapshot.id for snapshot in query.stream()]
        if len(ids) > 1:
            logger.warning("Gmail address %s belongs to several provider users: %s", address, ids)
        return ids[0] if ids else None


class RenewalResult(BaseModel):
    """One pass over every connected user's watch."""

    renewed: list[str] = Field(default_factory=list)  # was about to expire
    recreated: list[str] = Field(default_factory=list)  # had lapsed (or never existed)
    current: list[str] = Field(default_factory=list)  # valid for longer than the renewal margin
    stopped: list[str] = Field(default_factory=list)  # user no longer connected
    failed: dict[str, str] = Field(default_factory=dict)  # provider user id -> why (retried next pass)

    def summary_lines(self) -> list[str]:
        lines = [
            f"{name}: {len(ids)}" + (f" — {', '.join(ids)}" if ids and name != "current" else "")
            for name, ids in (
                ("renewed", self.renewed),
                ("recreated", self.recreated),
                ("current", self.current),
                ("stopped", self.stopped),
            )
        ]
        failed = ", ".join(f"{user} ({why})" for user, why in self.failed.items())
        return [*lines, f"failed: {len(self.failed)}" + (f" — {failed}" if failed else "")]


class GmailWatches:
    """Registers, renews and stops the Gmail watches of provider users on one topic."""

    def __init__(
        self,
        topic: str,
        client: firestore.Client,
        *,
        settings: Settings | None = None,
        gmail_factory: Callable[[str], GmailWatchClient] | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.topic = topic
        self.client = client
        self.settings = settings or get_settings()
        self.repository = WatchRepository(client)
        self.gmail_factory = gmail_factory or self._gmail_client
        self.now = now
        self._topic_ready = False

    def _gmail_client(self, provider_user_id: str) -> GmailWatchClient:
        return GmailWatchClient(CredentialsRepository(self.client).get(provider_user_id), self.settings)

    def register(self, provider_user_id: str) -> StoredWatch:
        """`users.watch` for the user (new, renewed or re-created: Gmail keeps one watch per user)."""
        if not self._topic_ready:  # Gmail refuses a watch on a topic that does not exist
            ensure_topic(self.topic)
            self._topic_ready = True
        gmail = self.gmail_factory(provider_user_id)
        address = gmail.get_profile().email_address
        registration = gmail.watch(self.topic)
        watch = StoredWatch(
            topic_name=self.topic,
            history_id=registration.history_id,
            expiration=registration.expiration,
            registered_at=self.now(),
        )
        self.repository.save(provider_user_id, watch, address)
        logger.info(
            "Gmail watch of %s (%s) on %s until %s", provider_user_id, address, self.topic, watch.expiration
        )
        return watch

    def stop(self, provider_user_id: str) -> None:
        """`users.stop` and forget the watch (a failed stop is logged: the watch then lapses by itself)."""
        try:
            self.gmail_factory(provider_user_id).stop_watch()
        except Exception as exc:
            logger.warning("could not stop the Gmail watch of %s: %s", provider_user_id, describe_error(exc))
        self.repository.clear(provider_user_id)
        logger.info("Gmail watch of %s stopped", provider_user_id)

    def renew(self) -> RenewalResult:
        """Renew every connected user's watch that expires within the margin, re-create lapsed or
        missing ones, stop the watches of users no longer connected. Failures are retried next pass."""
        result = RenewalResult()
        now = self.now()
        due = now + timedelta(seconds=self.settings.gmail_watch_renew_before_seconds)
        active = dict(ProviderUserRepository(self.client).list_gmail_active())
        stored = self.repository.all()
        for provider_user_id in sorted(active):
            watch = stored.get(provider_user_id)
            if watch is not None and watch.topic_name == self.topic and watch.expiration > due:
                result.current.append(provider_user_id)
                continue
            if automatic_sync_blocked(active[provider_user_id]) is not None:
                result.failed[provider_user_id] = "needs reauthorization"
                continue
            lapsed = watch is None or watch.expiration <= now or watch.topic_name != self.topic
            try:
                self.register(provider_user_id)
            except Exception as exc:
                result.failed[provider_user_id] = describe_error(exc)
                logger.warning("could not renew the Gmail watch of %s: %s", provider_user_id, exc)
                continue
            (result.recreated if lapsed else result.renewed).append(provider_user_id)
        for provider_user_id in sorted(set(stored) - set(active)):
            self.stop(provider_user_id)
            result.stopped.append(provider_user_id)
        return result
