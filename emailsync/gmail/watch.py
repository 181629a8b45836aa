"""The Gmail calls of push and of the periodic sweep, beside the sync client's: whether a mailbox
changed since a historyId (one history.list page of one record: 2 quota units), `users.watch` and
`users.stop`. Same pacing, retries and error table as every other Gmail call (`GmailClient`).
"""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel

from emailsync.gmail.client import GmailClient


class HistoryCheck(BaseModel):
    """What one history.list call says: anything recorded since the start, and the latest historyId."""

    changed: bool
    history_id: str


class WatchRegistration(BaseModel):
    """The answer of `users.watch`: notifications follow changes after `history_id` until `expiration`."""

    history_id: str
    expiration: datetime


class GmailWatchClient(GmailClient):
    """`GmailClient` plus the calls push and the sweep need."""

    def history_changed_since(self, start_history_id: str) -> HistoryCheck:
        """Whether the mailbox has any history record (of any type) after `start_history_id`.

        404 (history too old) raises `HistoryExpiredError`, as `list_history` does.
        """
        gmail = self._connection
        request = gmail.history.list(userId="me", startHistoryId=str(start_history_id), maxResults=1)
        data = gmail.call(request, gmail.costs.history_list, "history.list")
        return HistoryCheck(
            changed=bool(data.get("history")),
            history_id=str(data.get("historyId") or start_history_id),
        )

    def watch(self, topic_name: str, label_ids: list[str] | None = None) -> WatchRegistration:
        """Start (or renew: Gmail replaces the user's watch) push notifications to `topic_name`."""
        body: dict[str, object] = {"topicName": topic_name}
        if label_ids:
            body["labelIds"] = list(label_ids)
            body["labelFilterBehavior"] = "include"
        gmail = self._connection
        data = gmail.call(gmail.users.watch(userId="me", body=body), gmail.costs.watch, "users.watch")
        expiration_ms = int(data.get("expiration") or 0)
        return WatchRegistration(
            history_id=str(data.get("historyId") or ""),
            expiration=datetime.fromtimestamp(expiration_ms / 1000, tz=UTC),
        )

    def stop_watch(self) -> None:
        """Stop the user's push notifications (no watch: nothing happens)."""
        gmail = self._connection
        gmail.call(gmail.users.stop(userId="me"), gmail.costs.stop, "users.stop")
