"""The HTTP layer: a threading server with keep-alive that hands each request to the API."""

from __future__ import annotations

import contextlib
import socket
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from emailsync.local.gmail_server.responses import JSON_CONTENT_TYPE, ApiResponse, error_response

if TYPE_CHECKING:
    from emailsync.local.gmail_server.server import GmailApiServer


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
