"""The server's Gmail users: every bearer token is its own user with its own copy of the mailbox.

A user's mailbox is made on the token's first use as a fork of the served (template) mailbox, so it
starts as the `--mbox` and then changes on its own; messages delivered to the template
(`GmailApiServer.add_message` without a token) reach every user forked from it. A token can also be
given a mailbox of its own (`add_mailbox`) or act as another token's user (`alias`: an OAuth access
token acting for its refresh token's user)."""

from __future__ import annotations

import functools
import hashlib
import threading
from collections.abc import Callable

from emailsync.local.mailbox import Mailbox

UserChangeListener = Callable[[Mailbox, int], None]


def user_email_address(user_key: str, template_address: str) -> str:
    """The stable, distinct address of the user behind `user_key` (a token): the template's address
    plus a tag derived from the key, so the token itself never shows (e.g. me+3f2a9c1b0d@example.com)."""
    local, _, domain = template_address.partition("@")
    tag = hashlib.sha256(user_key.encode()).hexdigest()[:10]
    return f"{local}+{tag}@{domain or 'example.com'}"


class Users:
    """Token → mailbox. Thread-safe."""

    def __init__(self, template: Mailbox, history_retention: int | None = None) -> None:
        self._lock = threading.Lock()
        self.template = template
        self.history_retention = history_retention
        self._by_user: dict[str, Mailbox] = {}
        self._user_of_token: dict[str, str] = {}
        self._listeners: list[UserChangeListener] = []
        self._watched: dict[int, tuple[Mailbox, Callable[[int], None]]] = {}  # id(mailbox) → its listener
        if history_retention is not None:
            template.set_history_retention(history_retention)

    def mailbox_for(self, token: str | None) -> Mailbox:
        """The token's mailbox, made on first use; None → the template (helpers that address "the mbox")."""
        if token is None:
            return self.template
        with self._lock:
            user = self._user_of_token.get(token, token)
            mailbox = self._by_user.get(user)
            if mailbox is None:
                mailbox = self.template.fork(user_email_address(user, self.template.email_address))
                self._by_user[user] = mailbox
                self._watch(mailbox)
            return mailbox

    def user_key(self, token: str) -> str:
        """The user key a token acts for (itself unless aliased)."""
        with self._lock:
            return self._user_of_token.get(token, token)

    def add_mailbox(self, token: str, mailbox: Mailbox) -> None:
        with self._lock:
            user = self._user_of_token.get(token, token)
            if (replaced := self._by_user.get(user)) is not None and replaced is not mailbox:
                self._forget(replaced)
            self._by_user[user] = mailbox
            self._watch(mailbox)

    def alias(self, token: str, user_token: str) -> None:
        """From now on `token` acts as `user_token`'s user (same mailbox, quota, address)."""
        with self._lock:
            self._user_of_token[token] = self._user_of_token.get(user_token, user_token)

    def add_change_listener(self, listener: UserChangeListener) -> None:
        with self._lock:
            self._listeners.append(listener)

    def reset(self, template: Mailbox | None = None) -> None:
        """Forget every user and alias (listeners stay); optionally serve a new template."""
        with self._lock:
            for mailbox, _ in list(self._watched.values()):
                self._forget(mailbox)
            self._by_user.clear()
            self._user_of_token.clear()
            if template is not None:
                self.template = template
                if self.history_retention is not None:
                    template.set_history_retention(self.history_retention)

    def set_history_retention(self, records: int | None) -> None:
        with self._lock:
            self.history_retention = records
            mailboxes = [self.template, *self._by_user.values()]
        for mailbox in mailboxes:
            mailbox.set_history_retention(records)

    def _watch(self, mailbox: Mailbox) -> None:
        """A user's mailbox: the server's retention, and its changes go to the server's listeners."""
        if self.history_retention is not None:
            mailbox.set_history_retention(self.history_retention)
        if id(mailbox) not in self._watched:
            listener = functools.partial(self._changed, mailbox)
            self._watched[id(mailbox)] = (mailbox, listener)
            mailbox.add_change_listener(listener)

    def _forget(self, mailbox: Mailbox) -> None:
        """A mailbox no user has any more: no deliveries from the template, no listener calls."""
        if (watched := self._watched.pop(id(mailbox), None)) is not None:
            mailbox.remove_change_listener(watched[1])
        self.template.unfork(mailbox)

    def _changed(self, mailbox: Mailbox, history_id: int) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            listener(mailbox, history_id)
