"""A local Gmail-API-compatible HTTP server backed by a `Mailbox` (for tests, benchmarks and the demo).

This module holds the server (auth, quota charging, routing, stats); beside it: `http` (the HTTP layer),
`resources` (the API methods), `batch` (the multipart codec), `query` (q, page tokens), `quota`
(the per-user token bucket) and `responses` (Google-shaped answers and errors).

The real google-api-python-client talks to it unchanged: build the service with
`client_options={"api_endpoint": server.url}` and send batches to `server.url + "batch/gmail/v1"`.

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
  POST /batch/gmail/v1 (and /batch)      multipart/mixed batch of the above, at most 100 parts

Semantics worth knowing:
- `after:`/`before:` take YYYY/MM/DD (UTC midnight — real Gmail uses the account's time zone) or epoch
  seconds; they compare against internalDate with after `>=` and before `<`.
- Quota: one token bucket per user (bearer token) refilled at `quota_units_per_second`, capacity one
  second's worth, because Gmail enforces its per-user limit per second rather than per minute. A batch
  POST costs nothing itself; each part costs its method and may get its own 429 while the batch is 200,
  as Gmail does. `quota_units_per_second=None` or `0` disables the quota (raw-throughput benchmarks).
- `q` terms: after:, before:, in:, label:, is:(un)read, is:(un)starred, is:important, category:, each
  but the dates negatable with "-"; others → 400. SPAM and TRASH are left out unless includeSpamTrash,
  in:anywhere, or the query names them.
- Auth: any bearer token is accepted unless `revoke(token)`-ed; no token or a revoked one → 401.
- Users (`users.py`): every bearer token is its own Gmail user with its own copy (fork) of the served
  mailbox, made on first use, with a stable distinct emailAddress; `add_mailbox(token, mailbox)` serves a
  given mailbox instead. `add_message(raw)` without a token delivers to every user forked from it.
- History (`emailsync/local/history.py`): one record per change, contiguous ids; `history_retention=N`
  keeps the newest N records per user, an older startHistoryId gets 404.
"""

from __future__ import annotations

import math
import random
import re
import secrets
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from pydantic import BaseModel

from emailsync.config import QuotaCosts
from emailsync.local.gmail_server import label_resources, resources, writes
from emailsync.local.gmail_server.batch import (
    _BOUNDARY,
    MAX_BATCH_PARTS,
    _batch_part_bytes,
    _parse_batch_part,
    _split_multipart,
)
from emailsync.local.gmail_server.http import _Handler, _HttpServer
from emailsync.local.gmail_server.query import (
    _bearer_token,
)
from emailsync.local.gmail_server.quota import QuotaExceeded, TokenBucket
from emailsync.local.gmail_server.responses import (
    ApiResponse,
    _unauthorized,
    error_response,
)
from emailsync.local.gmail_server.users import UserChangeListener, Users
from emailsync.local.mailbox import Mailbox

_MESSAGES_PATH = re.compile(r"^/gmail/v1/users/([^/]+)/messages/?$")
_MESSAGE_PATH = re.compile(r"^/gmail/v1/users/([^/]+)/messages/([^/]+)$")
_MESSAGE_ACTION_PATH = re.compile(r"^/gmail/v1/users/([^/]+)/messages/([^/]+)/(modify|trash|untrash)$")
_LABELS_PATH = re.compile(r"^/gmail/v1/users/([^/]+)/labels/?$")
_LABEL_PATH = re.compile(r"^/gmail/v1/users/([^/]+)/labels/([^/]+)$")
_ATTACHMENT_PATH = re.compile(r"^/gmail/v1/users/([^/]+)/messages/([^/]+)/attachments/([^/]+)$")
_HISTORY_PATH = re.compile(r"^/gmail/v1/users/([^/]+)/history/?$")
_PROFILE_PATH = re.compile(r"^/gmail/v1/users/([^/]+)/profile/?$")
_BATCH_PATHS = ("/batch/gmail/v1", "/batch")
_WRITE_ACTIONS = {
    "modify": writes.messages_modify,
    "trash": writes.messages_trash,
    "untrash": writes.messages_untrash,
}
STATS_PATH = "/_stats"  # GET: ServerStats as JSON (admin, for out-of-process callers)


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
        history_retention: int | None = None,
    ) -> None:
        self._users = Users(mailbox, history_retention)
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
            "messages.insert": self.costs.messages_insert,
            "messages.modify": self.costs.messages_modify,
            "messages.trash": self.costs.messages_trash,
            "messages.untrash": self.costs.messages_untrash,
            "messages.delete": self.costs.messages_delete,
            "messages.batchModify": self.costs.messages_batch_modify,
            "messages.batchDelete": self.costs.messages_batch_delete,
            "labels.list": self.costs.labels_list,
            "labels.get": self.costs.labels_get,
            "labels.create": self.costs.labels_create,
        }
        self._random = random.Random(seed)
        self._lock = threading.Lock()
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
    @property
    def mailbox(self) -> Mailbox:
        """The served mailbox (the `--mbox`): every user's mailbox starts as a fork of it."""
        return self._users.template

    def add_mailbox(self, token: str, mailbox: Mailbox) -> None:
        """Serve `mailbox` itself to requests bearing `token` (instead of a fork of the served mailbox)."""
        self._users.add_mailbox(token, mailbox)

    def mailbox_for(self, token: str | None) -> Mailbox:
        """The mailbox of the token's user, made on first use; None → the served mailbox."""
        return self._users.mailbox_for(token)

    def alias_token(self, token: str, user_token: str) -> None:
        """`token` acts as `user_token`'s user from now on (e.g. an access token for its refresh token)."""
        self._users.alias(token, user_token)

    def user_key(self, token: str) -> str:
        """The user key `token` acts for: itself unless aliased (quota buckets are per user)."""
        return self._users.user_key(token)

    def add_change_listener(self, listener: UserChangeListener) -> None:
        """Call `listener(mailbox, history_id)` after every change of any user's mailbox, present or future
        (outside the mailbox lock, on the thread that made the change)."""
        self._users.add_change_listener(listener)

    def set_history_retention(self, records: int | None) -> None:
        """Keep the newest `records` history records of every user (None = all)."""
        self._users.set_history_retention(records)

    def revoke(self, token: str) -> None:
        """From now on `token` gets 401 UNAUTHENTICATED, like a user who revoked access."""
        with self._lock:
            self._revoked.add(token)

    def add_message(
        self,
        raw: bytes,
        token: str | None = None,
        internal_date_ms: int | None = None,
        label_ids: Iterable[str] | None = None,
    ) -> str:
        """Deliver a new message (labels default to INBOX + UNREAD) to the token's mailbox; without a
        token, to the served mailbox and every user forked from it. Returns its id."""
        return self.mailbox_for(token).add_message(
            raw, internal_date_ms=internal_date_ms, label_ids=label_ids
        )

    def expire_history_before(self, history_id: int, token: str | None = None) -> None:
        """history.list with an older startHistoryId now answers 404 (token's mailbox; without a token the
        served mailbox, and every user forked from it keeps as many newest records)."""
        self.mailbox_for(token).expire_history_before(history_id)

    def reset(self, mailbox: Mailbox | None = None) -> None:
        """Back to a clean state: stats, revocations, quota buckets and users cleared (change listeners
        and the history retention stay)."""
        self._users.reset(mailbox)
        with self._lock:
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
        return self._handle_call(method, target, _bearer_token(headers.get("authorization")), body)

    def _handle_call(
        self, http_method: str, target: str, token: str | None, body: bytes = b""
    ) -> ApiResponse:
        split = urlsplit(target)
        path = unquote(split.path)
        params = parse_qs(split.query, keep_blank_values=True)
        route = self._route(http_method, path, body)
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
        self, http_method: str, path: str, body: bytes
    ) -> tuple[str, Callable[..., ApiResponse], tuple[bytes | str, ...]] | None:
        """(API method name, handler, arguments after (mailbox, params)). Writes take the body first."""
        if http_method == "GET":
            if match := _MESSAGE_PATH.match(path):
                return "messages.get", resources.messages_get, (match.group(2),)
            if match := _ATTACHMENT_PATH.match(path):
                return "messages.attachments.get", resources.attachments_get, (match.group(2), match.group(3))
            if _MESSAGES_PATH.match(path):
                return "messages.list", resources.messages_list, ()
            if _HISTORY_PATH.match(path):
                return "history.list", resources.history_list, ()
            if _PROFILE_PATH.match(path):
                return "getProfile", resources.get_profile, ()
            if _LABELS_PATH.match(path):
                return "labels.list", label_resources.labels_list, ()
            if match := _LABEL_PATH.match(path):
                return "labels.get", label_resources.labels_get, (match.group(2),)
        elif http_method == "POST":
            if _MESSAGES_PATH.match(path):
                return "messages.insert", writes.messages_insert, (body,)
            if match := _MESSAGE_ACTION_PATH.match(path):
                action = match.group(3)
                return f"messages.{action}", _WRITE_ACTIONS[action], (body, match.group(2))
            if match := _MESSAGE_PATH.match(path):
                if match.group(2) == "batchModify":
                    return "messages.batchModify", writes.messages_batch_modify, (body,)
                if match.group(2) == "batchDelete":
                    return "messages.batchDelete", writes.messages_batch_delete, (body,)
            if _LABELS_PATH.match(path):
                return "labels.create", label_resources.labels_create, (body,)
        elif http_method == "DELETE" and (match := _MESSAGE_PATH.match(path)):
            return "messages.delete", writes.messages_delete, (body, match.group(2))
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
                user = self._users.user_key(token)  # Gmail's quota is per user, whichever token
                bucket = self._buckets.get(user)
                if bucket is None:
                    bucket = self._buckets[user] = TokenBucket(rate)
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
                method, target, inner_headers, inner_body = inner
                token = _bearer_token(inner_headers.get("authorization")) or outer_token
                response = self._handle_call(method, target, token, inner_body)
            response_id = f"response-{content_id}" if content_id else f"response-{index + 1}"
            chunks.append(_batch_part_bytes(boundary, response_id, response))
        chunks.append(f"--{boundary}--\r\n".encode("ascii"))
        return ApiResponse(
            status=200,
            body=b"".join(chunks),
            headers={"Content-Type": f"multipart/mixed; boundary={boundary}"},
        )


def run_gmail_server(
    mbox: Path,
    port: int,
    quota_units_per_second: float,
    fail_rate: float,
    latency_ms: int,
    shift_dates: bool = True,
    history_retention: int | None = None,
) -> None:
    """`emailsync gmail-server`: serve `mbox` until Ctrl-C, printing the root URL."""
    mailbox = Mailbox.from_mbox(mbox, shift_dates=shift_dates)
    server = GmailApiServer(
        mailbox,
        port=port,
        quota_units_per_second=quota_units_per_second,
        fail_rate=fail_rate,
        latency_ms=latency_ms,
        history_retention=history_retention,
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
