"""Gmail API answers: one call's response and errors in Google's JSON shape."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

JSON_CONTENT_TYPE = "application/json; charset=UTF-8"


@dataclass(slots=True)
class ApiResponse:
    """One API call's answer, either as a whole HTTP response or as a batch part (internal, hot path)."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


def _json(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode("ascii")


_ERROR_STATUS_NAMES = {
    400: ("INVALID_ARGUMENT", "badRequest", "global"),
    401: ("UNAUTHENTICATED", "authError", "global"),
    404: ("NOT_FOUND", "notFound", "global"),
    409: ("ALREADY_EXISTS", "duplicate", "global"),
    429: ("RESOURCE_EXHAUSTED", "rateLimitExceeded", "usageLimits"),
    500: ("INTERNAL", "backendError", "global"),
    503: ("UNAVAILABLE", "backendError", "global"),
}


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> ApiResponse:
    """An error in Google's JSON shape: {"error": {"code", "message", "errors": [...], "status"}}."""
    status_name, reason, domain = _ERROR_STATUS_NAMES.get(status, ("UNKNOWN", "unknown", "global"))
    detail: dict[str, Any] = {"message": message, "domain": domain, "reason": reason}
    if status == 401:
        detail.update(location="Authorization", locationType="header")
    body = {"error": {"code": status, "message": message, "errors": [detail], "status": status_name}}
    return ApiResponse(status=status, body=_json(body), headers=headers or {})


def _unauthorized(message: str) -> ApiResponse:
    return error_response(401, message, {"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/"'})


def _not_found() -> ApiResponse:
    return error_response(404, "Requested entity was not found.")


def no_content() -> ApiResponse:
    """What delete, batchDelete and batchModify answer: 204 with an empty body."""
    return ApiResponse(status=204, body=b"")
