"""A local Gmail-API-compatible HTTP server backed by a `Mailbox` (for tests, benchmarks and the demo).

The real google-api-python-client talks to it unchanged: build the service with
`client_options={"api_endpoint": server.url}` and send batches to `server.url + "batch/gmail/v1"`.

Served (paths as Google's):
  GET  /gmail/v1/users/{userId}/messages              messages.list  (q after:/before:, maxResults, pageToken)
  GET  /gmail/v1/users/{userId}/messages/{id}         messages.get   (format raw|full|metadata|minimal)
  GET  /gmail/v1/users/{userId}/messages/{id}/attachments/{attachmentId}   messages.attachments.get
  GET  /gmail/v1/users/{userId}/history               history.list   (startHistoryId, messageAdded only)
  GET  /gmail/v1/users/{userId}/profile               users.getProfile
  POST /batch/gmail/v1 (and /batch)                   multipart/mixed batch of the above, at most 100 parts

Semantics worth knowing:
- `after:`/`before:` take YYYY/MM/DD (UTC midnight — real Gmail uses the account's time zone) or epoch
  seconds; they compare against internalDate with after `>=` and before `<`.
- Quota: one token bucket per user (bearer token) refilled at `quota_units_per_second`, capacity one
  second's worth, because Gmail enforces its per-user limit per second rather than per minute. A batch
  POST costs nothing itself; each part costs its method and may get its own 429 while the batch is 200,
  as Gmail does. `quota_units_per_second=None` or `0` disables the quota (raw-throughput benchmarks).
- Auth: any bearer token is accepted unless `revoke(token)`-ed; no token or a revoked one → 401.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import math
import random
import re
import secrets
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from pydantic import BaseModel

from emailsync.config import QuotaCosts
from emailsync.local.mailbox import Mailbox, StoredMessage, b64url

MAX_BATCH_PARTS = 100
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 500
JSON_CONTENT_TYPE = "application/json; charset=UTF-8"
SUPPORTED_FORMATS = ("full", "metadata", "minimal", "raw")
# q terms accepted and ignored: everything lives in INBOX, there are no chats
_NO_OP_TERMS = {"in:anywhere", "-in:chats", "in:inbox"}

_MESSAGES_PATH = re.compile(r"^/gmail/v1/users/([^/]+)/messages/?$")
_MESSAGE_PATH = re.compile(r"^/gmail/v1/users/([^/]+)/messages/([^/]+)$")
_ATTACHMENT_PATH = re.compile(r"^/gmail/v1/users/([^/]+)/messages/([^/]+)/attachments/([^/]+)$")
_HISTORY_PATH = re.compile(r"^/gmail/v1/users/([^/]+)/history/?$")
_PROFILE_PATH = re.compile(r"^/gmail/v1/users/([^/]+)/profile/?$")
_BATCH_PATHS = ("/batch/gmail/v1", "/batch")
STATS_PATH = "/_stats"  # GET: ServerStats as JSON (admin, for out-of-process callers)
_BOUNDARY = re.compile(r'boundary="?([^";]+)"?', re.IGNORECASE)


class ServerStats(BaseModel):
    """A snapshot of what the server has seen since start (or the last `reset_stats()`)."""

    http_requests: int = 0
    batch_requests: int = 0
    batch_parts: int = 0
    requests_by_method: dict[str, int] = {}  # API calls, batch parts included
    responses_by_status: dict[int, int] = {}  # API call outcomes, batch parts included
    rate_limited: int = 0  # 429s from the quota (injected 429s count under errors_injected)
    errors_injected: int = 0
    quota_units: int = 0  # units charged for calls that were served


@dataclass(slots=True)
class ApiResponse:
    """One API call's answer, either as a whole HTTP response or as a batch part (internal, hot path)."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


def _json(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode("ascii")


_ERROR_STATUS_NAMES = {
    400: ("INVALID_ARGUMENT", "badRequest", "global"),
    401: ("UNAUTHENTICATED", "authError", "global"),
    404: ("NOT_FOUND", "notFound", "global"),
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


class QuotaExceeded(Exception):
    def __init__(self, retry_after_seconds: float) -> None:
        super().__init__(retry_after_seconds)
        self.retry_after_seconds = retry_after_seconds


class TokenBucket:
    """Per-user quota: `rate` units/s, capacity one second's worth. Not thread-safe (caller locks)."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.capacity = rate
        self.tokens = rate
        self._clock = clock
        self._updated = clock()

    def take(self, cost: float) -> None:
        """Charge `cost` units or raise QuotaExceeded with the wait until it would fit."""
        now = self._clock()
        self.tokens = min(self.capacity, self.tokens + (now - self._updated) * self.rate)
        self._updated = now
        # a cost above the capacity (tiny test quotas) may overdraw a full bucket instead of never fitting
        if cost <= self.tokens or self.tokens >= self.capacity:
            self.tokens -= cost
            return
        raise QuotaExceeded((min(cost, self.capacity) - self.tokens) / self.rate)


def parse_search_date(value: str) -> int:
    """`after:`/`before:` operand → epoch ms. YYYY/MM/DD (or YYYY-MM-DD, MM/DD/YYYY) is UTC midnight;
    digits are epoch seconds. Raises ValueError (also for impossible dates)."""
    if value.isdigit():
        return int(value) * 1000
    if match := re.fullmatch(r"(\d{4})[/-](\d{1,2})[/-](\d{1,2})", value):
        year, month, day = (int(group) for group in match.groups())
    elif match := re.fullmatch(r"(\d{1,2})/(\d{1,2})/(\d{4})", value):  # Gmail also takes MM/DD/YYYY
        month, day, year = (int(group) for group in match.groups())
    else:
        raise ValueError(value)
    return int(datetime(year, month, day, tzinfo=UTC).timestamp() * 1000)


def parse_query(q: str) -> tuple[int | None, int | None]:
    """Gmail `q` → (after_ms, before_ms). Several bounds combine (the tightest wins). Raises ValueError
    for operators this server does not implement, so a client never silently gets a wrong result."""
    after_ms: int | None = None
    before_ms: int | None = None
    for term in q.split():
        lowered = term.lower()
        if lowered in _NO_OP_TERMS:
            continue
        operator, _, operand = lowered.partition(":")
        if operator in ("after", "before") and operand:
            try:
                millis = parse_search_date(operand)
            except ValueError:
                raise ValueError(f"Invalid date in search term {term!r}") from None
            if operator == "after":
                after_ms = millis if after_ms is None else max(after_ms, millis)
            else:
                before_ms = millis if before_ms is None else min(before_ms, millis)
            continue
        raise ValueError(
            f"Unsupported search term {term!r}: this local Gmail server supports after:, before:, "
            "in:anywhere, in:inbox and -in:chats"
        )
    return after_ms, before_ms


def _encode_token(payload: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(_json(payload)).decode("ascii").rstrip("=")


def _decode_token(token: str) -> dict[str, Any]:
    try:
        decoded = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
        raise ValueError("Invalid pageToken") from exc
    if not isinstance(decoded, dict):
        raise ValueError("Invalid pageToken")
    return decoded


def _page_size(params: dict[str, list[str]]) -> int:
    values = params.get("maxResults")
    if not values or values[-1] == "":
        return DEFAULT_PAGE_SIZE
    size = int(values[-1])  # ValueError → 400
    if size < 1:
        raise ValueError("maxResults must be positive")
    return min(size, MAX_PAGE_SIZE)


def _first(params: dict[str, list[str]], name: str, default: str = "") -> str:
    values = params.get(name)
    return values[-1] if values else default


def _bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


class GmailApiServer:
    """The server. Use as a context manager, or `start()` / `stop()`; `url` is the root URL."""

    def __init__(
        self,
        mailbox: Mailbox,
        host: str = "127.0.0.1",
        port: int = 0,
        quota_units_per_second: float | None = 250,
        costs: QuotaCosts | None = None,
        fail_rate: float = 0.0,
        latency_ms: int = 0,
        *,
        seed: int | None = None,
        max_batch_parts: int = MAX_BATCH_PARTS,
    ) -> None:
        self.mailbox = mailbox
        self.host = host
        self.port = port
        self.quota_units_per_second = quota_units_per_second or None
        self.costs = costs or QuotaCosts()
        self.fail_rate = fail_rate
        self.latency_ms = latency_ms
        self.max_batch_parts = max_batch_parts
        self._method_costs = {
            "messages.get": self.costs.messages_get,
            "messages.list": self.costs.messages_list,
            "history.list": self.costs.history_list,
            "getProfile": self.costs.get_profile,
            "messages.attachments.get": self.costs.messages_get,  # Gmail charges it like messages.get
        }
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._mailboxes: dict[str, Mailbox] = {}
        self._revoked: set[str] = set()
        self._buckets: dict[str, TokenBucket] = {}
        self._stats = ServerStats()
        self._method_counter: Counter[str] = Counter()
        self._status_counter: Counter[int] = Counter()
        self._httpd: _HttpServer | None = None
        self._thread: threading.Thread | None = None
        self._open = threading.Event()  # cleared by pause(): Gmail calls wait, as behind a slow network
        self._open.set()

    # ------------------------------------------------------------------------------ lifecycle
    def start(self) -> GmailApiServer:
        if self._httpd is not None:
            return self
        httpd = _HttpServer((self.host, self.port), _Handler)
        httpd.api = self
        self._httpd = httpd
        self.port = httpd.server_address[1]
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.1}, name="gmail-api-server", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._open.set()  # release calls held by pause()
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.close_connections()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> GmailApiServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Root URL ending in "/", to use as GMAIL_API_ENDPOINT / client_options api_endpoint."""
        if self._httpd is None:
            raise RuntimeError("GmailApiServer is not started")
        return f"http://{self.host}:{self.port}/"

    @property
    def batch_url(self) -> str:
        return self.url + "batch/gmail/v1"

    # -------------------------------------------------------------------------------- control
    def add_mailbox(self, token: str, mailbox: Mailbox) -> None:
        """Serve `mailbox` to requests bearing `token` (other tokens get the default mailbox)."""
        with self._lock:
            self._mailboxes[token] = mailbox

    def mailbox_for(self, token: str | None) -> Mailbox:
        if token is None:
            return self.mailbox
        return self._mailboxes.get(token, self.mailbox)

    def revoke(self, token: str) -> None:
        """From now on `token` gets 401 UNAUTHENTICATED, like a user who revoked access."""
        with self._lock:
            self._revoked.add(token)

    def add_message(self, raw: bytes, token: str | None = None, internal_date_ms: int | None = None) -> str:
        """Deliver a new message to the token's mailbox (default mailbox if None); returns its id."""
        return self.mailbox_for(token).add_message(raw, internal_date_ms=internal_date_ms)

    def expire_history_before(self, history_id: int, token: str | None = None) -> None:
        """history.list with an older startHistoryId now answers 404 (token's mailbox, default if None)."""
        self.mailbox_for(token).expire_history_before(history_id)

    def reset(self, mailbox: Mailbox | None = None) -> None:
        """Back to a clean state: stats, revocations, quota buckets and extra mailboxes cleared."""
        with self._lock:
            if mailbox is not None:
                self.mailbox = mailbox
            self._mailboxes.clear()
            self._revoked.clear()
            self._buckets.clear()
        self._open.set()
        self.reset_stats()

    def configure(
        self,
        *,
        quota_units_per_second: float | None = None,
        fail_rate: float | None = None,
        latency_ms: int | None = None,
        seed: int | None = None,
    ) -> None:
        """Change knobs of a running server (quota 0 = unlimited). Quota buckets restart full."""
        with self._lock:
            if quota_units_per_second is not None:
                self.quota_units_per_second = quota_units_per_second or None
                self._buckets.clear()
            if fail_rate is not None:
                self.fail_rate = fail_rate
            if latency_ms is not None:
                self.latency_ms = latency_ms
            if seed is not None:
                self._random = random.Random(seed)

    def pause(self) -> None:
        """Hold every Gmail call (not /_stats) until `resume()`: lets a test keep a sync mid-flight."""
        self._open.clear()

    def resume(self) -> None:
        self._open.set()

    @property
    def stats(self) -> ServerStats:
        with self._lock:
            return self._stats.model_copy(
                update={
                    "requests_by_method": dict(self._method_counter),
                    "responses_by_status": dict(self._status_counter),
                }
            )

    def reset_stats(self) -> None:
        with self._lock:
            self._stats = ServerStats()
            self._method_counter.clear()
            self._status_counter.clear()

    # ------------------------------------------------------------------------------- handling
    def handle_http(self, method: str, target: str, headers: dict[str, str], body: bytes) -> ApiResponse:
        """Entry point for one HTTP request (already read off the socket)."""
        if method == "GET" and urlsplit(target).path == STATS_PATH:
            # Admin route, not part of the Gmail API: lets a bench read the stats of a server running in
            # another process. Not counted in the stats it reports.
            return ApiResponse(200, self.stats.model_dump_json().encode())
        with self._lock:
            self._stats.http_requests += 1
            latency_ms = self.latency_ms
        if latency_ms:
            time.sleep(latency_ms / 1000)
        self._open.wait()
        path = urlsplit(target).path
        if method == "POST" and path.rstrip("/") in _BATCH_PATHS:
            return self._handle_batch(headers, body)
        return self._handle_call(method, target, _bearer_token(headers.get("authorization")))

    def _handle_call(self, http_method: str, target: str, token: str | None) -> ApiResponse:
        split = urlsplit(target)
        path = unquote(split.path)
        params = parse_qs(split.query, keep_blank_values=True)
        route = self._route(http_method, path)
        if route is None:
            return self._record(None, error_response(404, f"Unknown method or path: {http_method} {path}"))
        api_method, handler, path_args = route
        if token is None:
            response = _unauthorized(
                "Request is missing required authentication credential. Expected OAuth 2 access token."
            )
            return self._record(api_method, response)
        with self._lock:
            revoked = token in self._revoked
        if revoked:
            response = _unauthorized("Request had invalid authentication credentials. Invalid Credentials")
            return self._record(api_method, response)
        injected = self._injected_failure()
        if injected is not None:
            return self._record(api_method, injected, injected=True)
        try:
            self._charge(token, api_method)
        except QuotaExceeded as exceeded:
            retry_after = max(1, math.ceil(exceeded.retry_after_seconds))
            return self._record(api_method, self._rate_limited(retry_after), rate_limited=True)
        try:
            response = handler(self.mailbox_for(token), params, *path_args)
        except ValueError as exc:  # bad parameters
            response = error_response(400, str(exc) or "Invalid argument")
        return self._record(api_method, response)

    def _route(
        self, http_method: str, path: str
    ) -> tuple[str, Callable[..., ApiResponse], tuple[str, ...]] | None:
        if http_method != "GET":
            return None
        if match := _MESSAGE_PATH.match(path):
            return "messages.get", self._messages_get, (match.group(2),)
        if match := _ATTACHMENT_PATH.match(path):
            return "messages.attachments.get", self._attachments_get, (match.group(2), match.group(3))
        if _MESSAGES_PATH.match(path):
            return "messages.list", self._messages_list, ()
        if _HISTORY_PATH.match(path):
            return "history.list", self._history_list, ()
        if _PROFILE_PATH.match(path):
            return "getProfile", self._get_profile, ()
        return None

    def _injected_failure(self) -> ApiResponse | None:
        if self.fail_rate <= 0:
            return None
        with self._lock:
            if self._random.random() >= self.fail_rate:
                return None
            status = self._random.choice((500, 503, 429))
        if status == 429:
            return self._rate_limited(1)
        if status == 503:
            return error_response(503, "The service is currently unavailable.")
        return error_response(500, "Internal error encountered.")

    def _charge(self, token: str, api_method: str) -> None:
        rate = self.quota_units_per_second
        cost = self._method_costs[api_method]
        with self._lock:
            if rate:
                bucket = self._buckets.get(token)
                if bucket is None:
                    bucket = self._buckets[token] = TokenBucket(rate)
                bucket.take(cost)
            self._stats.quota_units += cost

    @staticmethod
    def _rate_limited(retry_after_seconds: int) -> ApiResponse:
        retry_at = datetime.fromtimestamp(time.time() + retry_after_seconds, UTC)
        message = f"User-rate limit exceeded.  Retry after {retry_at.isoformat(timespec='milliseconds')}"
        return error_response(429, message.replace("+00:00", "Z"), {"Retry-After": str(retry_after_seconds)})

    def _record(
        self,
        api_method: str | None,
        response: ApiResponse,
        *,
        rate_limited: bool = False,
        injected: bool = False,
    ) -> ApiResponse:
        with self._lock:
            if api_method is not None:
                self._method_counter[api_method] += 1
            self._status_counter[response.status] += 1
            if rate_limited:
                self._stats.rate_limited += 1
            if injected:
                self._stats.errors_injected += 1
        return response

    # ------------------------------------------------------------------------------- methods
    def _messages_list(self, mailbox: Mailbox, params: dict[str, list[str]]) -> ApiResponse:
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

    def _messages_get(self, mailbox: Mailbox, params: dict[str, list[str]], message_id: str) -> ApiResponse:
        message = mailbox.get(message_id)
        if message is None:
            return _not_found()
        message_format = _first(params, "format", "full").lower() or "full"
        if message_format not in SUPPORTED_FORMATS:
            raise ValueError(
                f"Invalid format {message_format!r}: expected one of {', '.join(SUPPORTED_FORMATS)}"
            )
        metadata_headers = tuple(sorted({name.lower() for name in params.get("metadataHeaders", [])}))
        cache_key = (message_format, metadata_headers) if message_format == "metadata" else message_format
        body = message.render_cache.get(cache_key)
        if body is None:
            body = _json(_message_resource(message, message_format, metadata_headers))
            message.render_cache[cache_key] = body
        return ApiResponse(status=200, body=body)

    def _attachments_get(
        self, mailbox: Mailbox, params: dict[str, list[str]], message_id: str, attachment_id: str
    ) -> ApiResponse:
        message = mailbox.get(message_id)
        data = message.attachment(attachment_id) if message is not None else None
        if data is None:
            return _not_found()
        return ApiResponse(status=200, body=_json({"size": len(data), "data": b64url(data)}))

    def _history_list(self, mailbox: Mailbox, params: dict[str, list[str]]) -> ApiResponse:
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

    def _get_profile(self, mailbox: Mailbox, params: dict[str, list[str]]) -> ApiResponse:
        payload = {
            "emailAddress": mailbox.email_address,
            "messagesTotal": len(mailbox),
            "threadsTotal": mailbox.thread_count,
            "historyId": str(mailbox.history_id),
        }
        return ApiResponse(status=200, body=_json(payload))

    # --------------------------------------------------------------------------------- batch
    def _handle_batch(self, headers: dict[str, str], body: bytes) -> ApiResponse:
        with self._lock:
            self._stats.batch_requests += 1
            self._method_counter["batch"] += 1
        match = _BOUNDARY.search(headers.get("content-type", ""))
        if match is None or not headers.get("content-type", "").lower().startswith("multipart/"):
            return error_response(400, "Batch requests must be multipart/mixed with a boundary")
        try:
            parts = _split_multipart(body, match.group(1).encode("latin-1"))
        except ValueError as exc:
            return error_response(400, str(exc))
        if len(parts) > self.max_batch_parts:
            return error_response(
                400, f"Too many requests in batch: {len(parts)} (at most {self.max_batch_parts} are allowed)"
            )
        outer_token = _bearer_token(headers.get("authorization"))
        boundary = "batch_" + secrets.token_hex(12)
        chunks: list[bytes] = []
        for index, part in enumerate(parts):
            with self._lock:
                self._stats.batch_parts += 1
            content_id, inner = _parse_batch_part(part)
            if inner is None:
                response = error_response(400, "Malformed batch part: expected an application/http request")
            else:
                method, target, inner_headers = inner
                token = _bearer_token(inner_headers.get("authorization")) or outer_token
                response = self._handle_call(method, target, token)
            response_id = f"response-{content_id}" if content_id else f"response-{index + 1}"
            chunks.append(_batch_part_bytes(boundary, response_id, response))
        chunks.append(f"--{boundary}--\r\n".encode("ascii"))
        return ApiResponse(
            status=200,
            body=b"".join(chunks),
            headers={"Content-Type": f"multipart/mixed; boundary={boundary}"},
        )


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


def _split_multipart(body: bytes, boundary: bytes) -> list[bytes]:
    """Body parts of a multipart message (headers + content), delimiter line endings stripped."""
    delimiter = b"--" + boundary
    segments = body.split(delimiter)
    if len(segments) < 2:
        raise ValueError("Batch body does not contain its boundary")
    parts: list[bytes] = []
    for segment in segments[1:]:
        if segment.startswith(b"--"):  # close delimiter
            break
        # the CRLF before a delimiter belongs to the delimiter (RFC 2046)
        if segment.endswith(b"\r\n"):
            segment = segment[:-2]
        elif segment.endswith(b"\n"):
            segment = segment[:-1]
        parts.append(segment.lstrip(b" \t").removeprefix(b"\r\n").removeprefix(b"\n"))
    return parts


def _split_head(data: bytes) -> tuple[list[str], bytes]:
    """Header lines and the rest, for CRLF or bare-LF messages."""
    crlf, lf = data.find(b"\r\n\r\n"), data.find(b"\n\n")
    if crlf != -1 and (lf == -1 or crlf < lf):
        head, rest = data[:crlf], data[crlf + 4 :]
    elif lf != -1:
        head, rest = data[:lf], data[lf + 2 :]
    else:
        head, rest = data, b""
    return head.decode("latin-1").replace("\r\n", "\n").split("\n"), rest


def _header_map(lines: list[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in lines:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return headers


def _parse_batch_part(part: bytes) -> tuple[str | None, tuple[str, str, dict[str, str]] | None]:
    """(Content-ID without angle brackets, (method, target, headers) of the embedded request)."""
    part_lines, embedded = _split_head(part)
    part_headers = _header_map(part_lines)
    content_id = part_headers.get("content-id", "").strip()
    if content_id.startswith("<") and content_id.endswith(">"):
        content_id = content_id[1:-1]
    request_lines, _ = _split_head(embedded.lstrip(b"\r\n"))
    if not request_lines or not request_lines[0].strip():
        return content_id or None, None
    request_line = request_lines[0].split()
    if len(request_line) < 2:
        return content_id or None, None
    return content_id or None, (request_line[0].upper(), request_line[1], _header_map(request_lines[1:]))


def _batch_part_bytes(boundary: str, response_id: str, response: ApiResponse) -> bytes:
    reason = HTTPStatus(response.status).phrase
    lines = [
        f"--{boundary}",
        "Content-Type: application/http",
        f"Content-ID: <{response_id}>",
        "",
        f"HTTP/1.1 {response.status} {reason}",
        f"Content-Type: {JSON_CONTENT_TYPE}",
        "Vary: Origin, X-Origin, Referer",
    ]
    lines.extend(
        f"{name}: {value}" for name, value in response.headers.items() if name.lower() != "content-type"
    )
    lines.extend([f"Content-Length: {len(response.body)}", "", ""])
    return "\r\n".join(lines).encode("latin-1") + response.body + b"\r\n"


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    api: GmailApiServer

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Drop idle keep-alive connections so their handler threads end with the server."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: httplib2 reuses one connection per client
    server: _HttpServer
    timeout = 300  # an idle keep-alive connection is closed after this many seconds

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the request log would print bearer tokens' neighbours and flood test output

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {name.lower(): value for name, value in self.headers.items()}
        try:
            response = self.server.api.handle_http(self.command, self.path, headers, body)
        except Exception as exc:  # a server bug must surface as a 500, not a hung client
            response = error_response(
                500, f"Internal error in local Gmail server: {type(exc).__name__}: {exc}"
            )
        self._send(response)

    def _send(self, response: ApiResponse) -> None:
        reason = HTTPStatus(response.status).phrase
        head = [f"HTTP/1.1 {response.status} {reason}"]
        if not any(name.lower() == "content-type" for name in response.headers):
            head.append(f"Content-Type: {JSON_CONTENT_TYPE}")
        head.extend(f"{name}: {value}" for name, value in response.headers.items())
        head.append(f"Content-Length: {len(response.body)}")
        if self.close_connection:
            head.append("Connection: close")
        # one send per response: headers and body together (no Nagle / delayed-ACK stalls)
        self.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + response.body)

    do_GET = _serve
    do_POST = _serve
    do_PUT = _serve
    do_DELETE = _serve


def run_gmail_server(
    mbox: Path,
    port: int,
    quota_units_per_second: float,
    fail_rate: float,
    latency_ms: int,
    shift_dates: bool = True,
) -> None:
    """`emailsync gmail-server`: serve `mbox` until Ctrl-C, printing the root URL."""
    mailbox = Mailbox.from_mbox(mbox, shift_dates=shift_dates)
    server = GmailApiServer(
        mailbox,
        port=port,
        quota_units_per_second=quota_units_per_second,
        fail_rate=fail_rate,
        latency_ms=latency_ms,
    )
    with server:
        quota = f"{quota_units_per_second:g} units/s per user" if quota_units_per_second else "unlimited"
        print(f"Local Gmail API server on {server.url} ({len(mailbox)} messages from {mbox}; quota {quota})")
        print(f"Use GMAIL_API_ENDPOINT={server.url} ; batch endpoint {server.batch_url} ; Ctrl-C to stop")
        if threading.current_thread() is threading.main_thread():
            # Ctrl-C works even when started in the background (SIGINT inherited as ignored); TERM stops too
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGTERM, signal.default_int_handler)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            print("Stopping local Gmail API server")
