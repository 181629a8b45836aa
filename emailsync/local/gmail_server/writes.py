"""Gmail's message writes: insert, modify, batchModify, trash, untrash, delete, batchDelete.

Each takes the JSON request body (bytes) after the query parameters; bad input is a ValueError (400).
A single-message write answers with the message's id, threadId and labelIds, as Gmail's do."""

from __future__ import annotations

import base64
import binascii
import email.utils
from collections.abc import Callable
from typing import Any

from emailsync.local.gmail_server.query import _first, json_body
from emailsync.local.gmail_server.responses import ApiResponse, _json, _not_found, no_content
from emailsync.local.history import message_summary
from emailsync.local.mailbox import Mailbox
from emailsync.local.stored_message import StoredMessage

_INTERNAL_DATE_SOURCES = ("receivedTime", "dateHeader")


def _string_list(payload: dict[str, Any], name: str) -> list[str]:
    value = payload.get(name) or []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError(f"Invalid value at '{name}': expected a list of strings")
    return value


def _decode_raw(value: Any) -> bytes:
    if not isinstance(value, str) or not value:
        raise ValueError(
            "'raw' RFC822 payload message string or uploading message via /upload/* URL required"
        )
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("Invalid value at 'message.raw': not base64url") from None


def _date_header_ms(raw: bytes) -> int | None:
    message = email.message_from_bytes(raw)
    try:
        parsed = email.utils.parsedate_to_datetime(str(message.get("Date", "")))
    except (TypeError, ValueError, IndexError):
        return None
    return int(parsed.timestamp() * 1000) if parsed and parsed.tzinfo else None


def messages_insert(mailbox: Mailbox, params: dict[str, list[str]], body: bytes) -> ApiResponse:
    payload = json_body(body)
    raw = _decode_raw(payload.get("raw"))
    source = _first(params, "internalDateSource", "receivedTime") or "receivedTime"
    if source not in _INTERNAL_DATE_SOURCES:
        raise ValueError(f"Invalid internalDateSource: {source}")
    internal_date_ms = _date_header_ms(raw) if source == "dateHeader" else None
    message = mailbox.insert_message(raw, _string_list(payload, "labelIds"), internal_date_ms)
    return ApiResponse(status=200, body=_json(message_summary(message)))


def messages_modify(
    mailbox: Mailbox, params: dict[str, list[str]], body: bytes, message_id: str
) -> ApiResponse:
    payload = json_body(body)
    add, remove = _string_list(payload, "addLabelIds"), _string_list(payload, "removeLabelIds")
    try:
        message = mailbox.modify(message_id, add, remove)
    except KeyError:
        return _not_found()
    return ApiResponse(status=200, body=_json(message_summary(message)))


def messages_batch_modify(mailbox: Mailbox, params: dict[str, list[str]], body: bytes) -> ApiResponse:
    payload = json_body(body)
    ids = _string_list(payload, "ids")
    mailbox.batch_modify(ids, _string_list(payload, "addLabelIds"), _string_list(payload, "removeLabelIds"))
    return no_content()


def messages_trash(
    mailbox: Mailbox, params: dict[str, list[str]], body: bytes, message_id: str
) -> ApiResponse:
    return _label_change_response(mailbox.trash, message_id)


def messages_untrash(
    mailbox: Mailbox, params: dict[str, list[str]], body: bytes, message_id: str
) -> ApiResponse:
    return _label_change_response(mailbox.untrash, message_id)


def _label_change_response(change: Callable[[str], StoredMessage], message_id: str) -> ApiResponse:
    """The changed message's summary (Gmail answers trash/untrash with it), 404 for an unknown id."""
    try:
        message = change(message_id)
    except KeyError:
        return _not_found()
    return ApiResponse(status=200, body=_json(message_summary(message)))


def messages_delete(
    mailbox: Mailbox, params: dict[str, list[str]], body: bytes, message_id: str
) -> ApiResponse:
    try:
        mailbox.delete(message_id)
    except KeyError:
        return _not_found()
    return no_content()


def messages_batch_delete(mailbox: Mailbox, params: dict[str, list[str]], body: bytes) -> ApiResponse:
    mailbox.batch_delete(_string_list(json_body(body), "ids"))
    return no_content()
