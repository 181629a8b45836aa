"""The Gmail API's routes: (HTTP method, path pattern) → (API method name, handler).

Served (paths as Google's, under /gmail/v1/users/{userId}):
  GET    messages                        messages.list (q, labelIds, includeSpamTrash, maxResults, pageToken)
  POST   messages                        messages.insert ({"raw", "labelIds"}, internalDateSource)
  GET    messages/{id}                   messages.get (format raw|full|metadata|minimal)
  DELETE messages/{id}                   messages.delete
  POST   messages/{id}/modify|trash|untrash          messages.modify / trash / untrash
  POST   messages/batchModify|batchDelete            messages.batchModify / batchDelete
  GET    messages/{id}/attachments/{attachmentId}    messages.attachments.get
  GET    history                         history.list (startHistoryId, historyTypes, labelId)
  GET    labels, labels/{id}             labels.list, labels.get;   POST labels: labels.create
  GET    profile                         users.getProfile
  POST   watch, stop                     users.watch / users.stop (push to the Pub/Sub emulator: `push.py`)
  POST /batch/gmail/v1 (and /batch)      multipart/mixed batch of the above, at most 100 parts
  POST /token, POST /revoke              OAuth: refresh_token grant, revocation (`oauth.py`)
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import NamedTuple

from emailsync.local.gmail_server import label_resources, resources, writes
from emailsync.local.gmail_server.push import PushNotifier
from emailsync.local.gmail_server.responses import ApiResponse

PUSH_METHODS = ("users.watch", "users.stop")  # handlers get (user, mailbox, body), see `resolve`
BATCH_PATHS = ("/batch/gmail/v1", "/batch")

Handler = Callable[..., ApiResponse]


class Route(NamedTuple):
    api_method: str
    handler: Handler
    takes_body: bool = False  # writes get the request body before the path's arguments


def _path(rest: str) -> re.Pattern[str]:
    """A path under /gmail/v1/users/{userId}; the userId group is not passed to handlers."""
    return re.compile(rf"^/gmail/v1/users/([^/]+)/{rest}$")


def route_table(push: PushNotifier) -> dict[tuple[str, re.Pattern[str]], Route]:
    """Every API route; the push routes act on `push`, the server's watches."""
    return {
        ("GET", _path("messages/([^/]+)")): Route("messages.get", resources.messages_get),
        ("GET", _path("messages/([^/]+)/attachments/([^/]+)")): Route(
            "messages.attachments.get", resources.attachments_get
        ),
        ("GET", _path("messages/?")): Route("messages.list", resources.messages_list),
        ("GET", _path("history/?")): Route("history.list", resources.history_list),
        ("GET", _path("profile/?")): Route("getProfile", resources.get_profile),
        ("GET", _path("labels/?")): Route("labels.list", label_resources.labels_list),
        ("GET", _path("labels/([^/]+)")): Route("labels.get", label_resources.labels_get),
        ("POST", _path("messages/?")): Route("messages.insert", writes.messages_insert, takes_body=True),
        ("POST", _path("messages/([^/]+)/modify")): Route(
            "messages.modify", writes.messages_modify, takes_body=True
        ),
        ("POST", _path("messages/([^/]+)/trash")): Route(
            "messages.trash", writes.messages_trash, takes_body=True
        ),
        ("POST", _path("messages/([^/]+)/untrash")): Route(
            "messages.untrash", writes.messages_untrash, takes_body=True
        ),
        ("POST", _path("messages/batchModify")): Route(
            "messages.batchModify", writes.messages_batch_modify, takes_body=True
        ),
        ("POST", _path("messages/batchDelete")): Route(
            "messages.batchDelete", writes.messages_batch_delete, takes_body=True
        ),
        ("POST", _path("labels/?")): Route("labels.create", label_resources.labels_create, takes_body=True),
        ("POST", _path("watch/?")): Route("users.watch", push.watch),
        ("POST", _path("stop/?")): Route("users.stop", push.stop),
        ("DELETE", _path("messages/([^/]+)")): Route(
            "messages.delete", writes.messages_delete, takes_body=True
        ),
    }


def resolve(
    routes: dict[tuple[str, re.Pattern[str]], Route], http_method: str, path: str, body: bytes
) -> tuple[str, Handler, tuple[bytes | str, ...]] | None:
    """(API method name, handler, arguments after (mailbox, params)), or None for an unknown route."""
    for (method, pattern), route in routes.items():
        if method == http_method and (match := pattern.match(path)):
            path_args = match.groups()[1:]
            return route.api_method, route.handler, (body, *path_args) if route.takes_body else path_args
    return None
