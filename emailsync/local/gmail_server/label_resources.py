"""Gmail's labels methods: labels.list, labels.get, labels.create."""

from __future__ import annotations

from typing import Any

from emailsync.local.gmail_server.query import json_body
from emailsync.local.gmail_server.responses import ApiResponse, _json, _not_found, error_response
from emailsync.local.labels import LabelConflict
from emailsync.local.mailbox import Mailbox


def labels_list(mailbox: Mailbox, params: dict[str, list[str]]) -> ApiResponse:
    return ApiResponse(
        status=200, body=_json({"labels": [label.resource() for label in mailbox.label_list()]})
    )


def labels_get(mailbox: Mailbox, params: dict[str, list[str]], label_id: str) -> ApiResponse:
    label = mailbox.labels.get(label_id)
    if label is None:
        return _not_found()
    resource: dict[str, Any] = label.resource()
    resource.update(mailbox.label_counts(label_id))
    return ApiResponse(status=200, body=_json(resource))


def labels_create(mailbox: Mailbox, params: dict[str, list[str]], body: bytes) -> ApiResponse:
    payload = json_body(body)
    name = payload.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ValueError("Invalid label name")
    color = payload.get("color")
    if color is not None and not (
        isinstance(color, dict) and all(isinstance(value, str) for value in color.values())
    ):
        raise ValueError("Invalid value at 'label.color'")
    try:
        label = mailbox.create_label(
            name,
            message_list_visibility=payload.get("messageListVisibility", "show"),
            label_list_visibility=payload.get("labelListVisibility", "labelShow"),
            color=color,
        )
    except LabelConflict:
        return error_response(409, "Label name exists or conflicts")
    return ApiResponse(status=200, body=_json(label.resource()))
