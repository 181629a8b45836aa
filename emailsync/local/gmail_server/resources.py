"""Gmail resources rendered from stored messages."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from emailsync.local.gmail_server.query import _decode_token, _encode_token, _first, _page_size, parse_query
from emailsync.local.gmail_server.responses import ApiResponse, _json, _not_found
from emailsync.local.history import HISTORY_TYPES
from emailsync.local.labels import SPAM, TRASH, search_label_id
from emailsync.local.mailbox import Mailbox
from emailsync.local.stored_message import StoredMessage, b64url

SUPPORTED_FORMATS = ("full", "metadata", "minimal", "raw")


def _message_resource(message: StoredMessage, message_format: str, metadata_headers: tuple[str, ...]) -> dict:
    """The Message resource without its per-user fields (labelIds, historyId: see `_with_user_fields`)."""
    resource: dict[str, Any] = {
        "id": message.id,
        "threadId": message.thread_id,
        "snippet": message.snippet,
    }
    if message_format == "full":
        resource["payload"] = message.payload
    elif message_format == "metadata":
        headers = message.headers()
        if metadata_headers:
            headers = [header for header in headers if header["name"].lower() in metadata_headers]
        resource["payload"] = {
            "partId": "",
            "mimeType": message.payload["mimeType"],
            "filename": "",
            "headers": headers,
            "body": {"size": 0},
        }
    resource["sizeEstimate"] = message.size_estimate
    resource["internalDate"] = str(message.internal_date_ms)
    if message_format == "raw":
        resource["raw"] = message.raw_b64
    return resource


def _with_user_fields(cached: bytes, message: StoredMessage) -> bytes:
    """`cached` (a rendered resource minus its closing brace) + this user's labelIds and historyId.
    Like Gmail, a message without labels has no labelIds field at all."""
    labels = b',"labelIds":' + _json(list(message.label_ids)) if message.label_ids else b""
    return b"".join((cached, labels, b',"historyId":"', str(message.history_id).encode("ascii"), b'"}'))


def _resolve_labels(mailbox: Mailbox, terms: list[str]) -> set[str]:
    # a name no label has matches nothing, as in Gmail: keep an id no message carries
    return {search_label_id(mailbox.labels, term) or f"unknown:{term}" for term in terms}


def messages_list(mailbox: Mailbox, params: dict[str, list[str]]) -> ApiResponse:
    q = _first(params, "q")
    label_ids = sorted(params.get("labelIds", []))
    include_spam_trash = _first(params, "includeSpamTrash").lower() == "true"
    query = parse_query(q)
    required = set(label_ids) | _resolve_labels(mailbox, query.labels)
    excluded = _resolve_labels(mailbox, query.excluded_labels)
    if not (include_spam_trash or query.anywhere):
        excluded |= {SPAM, TRASH} - required  # Gmail leaves them out unless asked for
    page_size = _page_size(params)
    fingerprint = hashlib.sha1(json.dumps([q, label_ids, include_spam_trash]).encode()).hexdigest()[:12]
    cursor: tuple[int, int] | None = None
    if page_token := _first(params, "pageToken"):
        decoded = _decode_token(page_token)
        if decoded.get("f") != fingerprint or not isinstance(decoded.get("c"), list):
            raise ValueError("Invalid pageToken: it belongs to a different query")
        cursor = (int(decoded["c"][0]), int(decoded["c"][1]))
    matches, total = mailbox.search(
        after_ms=query.after_ms,
        before_ms=query.before_ms,
        label_ids=required,
        cursor=cursor,
        excluded_label_ids=excluded,
    )
    page = matches[:page_size]
    payload: dict[str, Any] = {}
    if page:  # Gmail omits "messages" entirely when nothing matches
        payload["messages"] = [{"id": message.id, "threadId": message.thread_id} for message in page]
    if len(matches) > page_size:
        last = page[-1]
        payload["nextPageToken"] = _encode_token(
            {"f": fingerprint, "c": [last.internal_date_ms, last.sequence]}
        )
    payload["resultSizeEstimate"] = total
    return ApiResponse(status=200, body=_json(payload))


def messages_get(mailbox: Mailbox, params: dict[str, list[str]], message_id: str) -> ApiResponse:
    message = mailbox.get(message_id)
    if message is None:
        return _not_found()
    message_format = _first(params, "format", "full").lower() or "full"
    if message_format not in SUPPORTED_FORMATS:
        raise ValueError(f"Invalid format {message_format!r}: expected one of {', '.join(SUPPORTED_FORMATS)}")
    metadata_headers = tuple(sorted({name.lower() for name in params.get("metadataHeaders", [])}))
    cache_key = (message_format, metadata_headers) if message_format == "metadata" else message_format
    cached = message.render_cache.get(cache_key)
    if cached is None:
        cached = _json(_message_resource(message, message_format, metadata_headers))[:-1]
        message.render_cache[cache_key] = cached
    return ApiResponse(status=200, body=_with_user_fields(cached, message))


def attachments_get(
    mailbox: Mailbox, params: dict[str, list[str]], message_id: str, attachment_id: str
) -> ApiResponse:
    message = mailbox.get(message_id)
    data = message.attachment(attachment_id) if message is not None else None
    if data is None:
        return _not_found()
    return ApiResponse(status=200, body=_json({"size": len(data), "data": b64url(data)}))


def history_list(mailbox: Mailbox, params: dict[str, list[str]]) -> ApiResponse:
    raw_start = _first(params, "startHistoryId")
    if not raw_start:
        raise ValueError("Required parameter: startHistoryId")
    history_types = frozenset(params.get("historyTypes", [])) or None
    if unknown := sorted((history_types or set()) - set(HISTORY_TYPES)):
        raise ValueError(f"Invalid historyTypes: {', '.join(unknown)}")
    label_id = _first(params, "labelId") or None
    page_size = _page_size(params)
    current = mailbox.history_id
    try:
        start = int(raw_start)
        if page_token := _first(params, "pageToken"):
            decoded = _decode_token(page_token)
            if decoded.get("s") != start:
                raise ValueError("Invalid pageToken")
            start = int(decoded["h"])
        records = mailbox.history(start, history_types, label_id)
    except (KeyError, ValueError):  # expired, garbage or foreign → Gmail answers 404
        return _not_found()
    page = records[:page_size]
    payload: dict[str, Any] = {}
    if page:
        payload["history"] = [record.resource(history_types) for record in page]
    if len(records) > page_size:
        payload["nextPageToken"] = _encode_token({"s": int(raw_start), "h": page[-1].history_id})
    payload["historyId"] = str(current)
    return ApiResponse(status=200, body=_json(payload))


def get_profile(mailbox: Mailbox, params: dict[str, list[str]]) -> ApiResponse:
    payload = {
        "emailAddress": mailbox.email_address,
        "messagesTotal": len(mailbox),
        "threadsTotal": mailbox.thread_count,
        "historyId": str(mailbox.history_id),
    }
    return ApiResponse(status=200, body=_json(payload))


# --------------------------------------------------------------------------------- batch
