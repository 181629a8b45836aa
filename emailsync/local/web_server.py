"""Serve the live progress page (web/dist, built by `make web`) on loopback, in a background thread.

The page signs its user in with Firebase Authentication and reads the emulators' addresses from
`/config.json`, which this server answers with the Firestore (and, when given, Auth) emulator host and
project it was started with (URL parameters `emulator=`, `authEmulator=` and `project=` still win, so
one page can be pointed anywhere). Without emulators the page uses web/firebase-config.json's project.
"""

from __future__ import annotations

import json
import logging
import threading
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from pydantic import BaseModel, ConfigDict

logger = logging.getLogger(__name__)

DEFAULT_DIST_DIR = Path(__file__).resolve().parents[2] / "web" / "dist"


class PageConfig(BaseModel):
    """The body of `/config.json`: defaults the page uses when its URL doesn't say otherwise."""

    model_config = ConfigDict(frozen=True)

    emulatorHost: str
    project: str
    authEmulatorHost: str | None = None


class WebServerHandle:
    """A running page server: open `url` and sign in, call `stop()` when done. Context manager."""

    def __init__(self, server: ThreadingHTTPServer, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread
        host, port = server.server_address[:2]
        self.url = f"http://{host}:{port}/"

    def page_url(self, uid: str, family_id: str | None = None, *, admin: bool = False) -> str:
        """The page URL with `uid`/`familyId` parameters (kept for old links; the page now ignores them
        and takes the user, `admin` and `familyId` from the Firebase Auth sign-in)."""
        params = {"uid": uid}
        if family_id:
            params["familyId"] = family_id
        if admin:
            params["admin"] = "1"
        return f"{self.url}?{urlencode(params)}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> WebServerHandle:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _handler_class(dist_dir: Path, config: PageConfig) -> type[SimpleHTTPRequestHandler]:
    config_body = json.dumps(config.model_dump(exclude_none=True)).encode()

    class ProgressPageHandler(SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(dist_dir), **kwargs)

        def do_GET(self) -> None:
            if urlsplit(self.path).path == "/config.json":
                self._send(HTTPStatus.OK, "application/json", config_body)
            elif not (dist_dir / "index.html").is_file():
                body = b"The progress page is not built: run `make web` (web/dist/ is missing).\n"
                self._send(HTTPStatus.SERVICE_UNAVAILABLE, "text/plain; charset=utf-8", body)
            else:
                super().do_GET()

        def end_headers(self) -> None:
            # A rebuilt bundle must be picked up on reload; the page is tiny and served locally.
            self.send_header("Cache-Control", "no-store")
            super().end_headers()

        def _send(self, status: HTTPStatus, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            logger.debug("web: " + format, *args)

    ProgressPageHandler.extensions_map = {
        **SimpleHTTPRequestHandler.extensions_map,
        ".js": "text/javascript",
        ".map": "application/json",
    }
    return ProgressPageHandler


def start_web_server(
    firestore_host: str,
    project: str,
    port: int = 0,
    *,
    dist_dir: Path | None = None,
    auth_host: str | None = None,
) -> WebServerHandle:
    """Serve web/dist on 127.0.0.1:`port` (0 = a free port); `/config.json` points at `firestore_host`
    (and the Auth emulator at `auth_host`)."""
    directory = (dist_dir or DEFAULT_DIST_DIR).resolve()
    if not (directory / "index.html").is_file():
        logger.warning("progress page not built (%s missing): run `make web`", directory / "index.html")
    config = PageConfig(emulatorHost=firestore_host, project=project, authEmulatorHost=auth_host)
    handler = _handler_class(directory, config)
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="progress-web-server", daemon=True)
    thread.start()
    return WebServerHandle(server, thread)
