"""Gmail-like threading for the local server: a reply joins the thread of the message it references,
or of an earlier message with the same subject once the Re:/Fwd: prefixes are gone."""

from __future__ import annotations

import email.message

from emailsync.local.stored_message import (
    _REPLY_PREFIX,
    _message_ids,
    _normalized_subject,
    decode_header_value,
)


class Threads:
    """Message-ID and subject → thread id, as messages arrive. Not thread-safe (the mailbox locks)."""

    def __init__(self) -> None:
        self._by_message_id: dict[str, str] = {}
        self._by_subject: dict[str, str] = {}

    def copy(self) -> Threads:
        clone = Threads()
        clone._by_message_id = dict(self._by_message_id)
        clone._by_subject = dict(self._by_subject)
        return clone

    def thread_for(self, headers: email.message.Message, own_id: str) -> str:
        references = _message_ids(headers.get("In-Reply-To")) + _message_ids(headers.get("References"))
        for reference in reversed(references):
            thread_id = self._by_message_id.get(reference)
            if thread_id:
                return thread_id
        subject = headers.get("Subject")
        normalized = _normalized_subject(subject)
        is_reply = bool(subject) and _REPLY_PREFIX.match(decode_header_value(subject)) is not None
        if normalized and (is_reply or references):
            thread_id = self._by_subject.get(normalized)
            if thread_id:
                return thread_id
        return own_id

    def remember(self, headers: email.message.Message, thread_id: str) -> None:
        for own in _message_ids(headers.get("Message-ID")):
            self._by_message_id.setdefault(own, thread_id)
        normalized = _normalized_subject(headers.get("Subject"))
        if normalized:
            self._by_subject.setdefault(normalized, thread_id)
