"""Gmail resources rendered from stored messages."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from emailsync.local.gmail_server.query import _decode_token, _encode_token, _first, _page_size, parse_query
from emailsync.local.gmail_server.responses import ApiResponse, _json, _not_found
from emailsync.local.mailbox import Mailbox
from emailsync.local.stored_message import StoredMessage, b64url

SUPPORTED_FORMATS = ("full", "metadata", "minimal", "raw")


def _message_resource(message: StoredMessage, message_format: str, metadata_headers: tuple[str, ...]) -> dict:
    resource: dict[str, Any] = {
        "id": message.id,
        "threadId": message.thread_id,
        "labelIds": list(message.label_ids),
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
    resource["historyId"] = str(message.history_id)
    resource["internalDate"] = str(message.internal_date_ms)
    if message_format == "raw":
        resource["raw"] = message.raw_b64
    return resource


def messages_list(mailbox: Mailbox, params: dict[str, list[str]]) -> ApiResponse:
    q = _first(params, "q")
    label_ids = sorted(params.get("labelIds", []))
    after_ms, before_ms = parse_query(q)
    page_size = _page_size(params)
    fingerprint = hashlib.sha1(json.dumps([q, label_ids]).encode()).hexdigest()[:12]
    cursor: tuple[int, int] | None = None
    if page_token := _first(params, "pageToken"):
        decoded = _decode_token(page_token)
        if decoded.get("f") != fingerprint or not isinstance(decoded.get("c"), list):
            raise ValueError("Invalid pageToken: it belongs to a different query")
        cursor = (int(decoded["c"][0]), int(decoded["c"][1]))
    matches, total = mailbox.search(
        after_ms=after_ms, before_ms=before_ms, label_ids=label_ids, cursor=cursor
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
    body = message.render_cache.get(cache_key)
    if body is None:
        body = _json(_message_resource(message, message_format, metadata_headers))
        message.render_cache[cache_key] = body
    return ApiResponse(status=200, body=body)


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
    page_size = _page_size(params)
    current = mailbox.history_id
    try:
        start = int(raw_start)
        if page_token := _first(params, "pageToken"):
            decoded = _decode_token(page_token)
            if decoded.get("s") != start:
                raise ValueError("Invalid pageToken")
            start = int(decoded["h"])
        changes = mailbox.history_since(start)
    except (KeyError, ValueError):  # expired, garbage or foreign → Gmail answers 404
        return _not_found()
    page = changes[:page_size]
    payload: dict[str, Any] = {}
    if page:
        payload["history"] = [
            {
                "id": str(message.history_id),
                "messages": [{"id": message.id, "threadId": message.thread_id}],
                "messagesAdded": [
                    {
                        "message": {
                            "id": message.id,
                            "threadId": message.thread_id,
                            "labelIds": list(message.label_ids),
                        }
                    }
                ],
            }
            for message in page
        ]
    if len(changes) > page_size:
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
