"""Does Firestore, does Gmail answer at all? Checked before a sync, so that an unreachable service fails
within seconds with one line naming it and where (`ServiceUnreachableError`), instead of after minutes of
the clients' own retries."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

from emailsync.config import Settings, get_settings
from emailsync.errors import ServiceUnreachableError

GOOGLE_GMAIL_ENDPOINT = "https://gmail.googleapis.com"


def _connect(host: str, port: int, timeout: float) -> str | None:
    """None when a TCP connection to host:port opens within `timeout`, else why not."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as exc:
        return exc.strerror or type(exc).__name__


def _host_port(address: str, default_port: int) -> tuple[str, int]:
    host, _, port = address.rpartition(":") if ":" in address else (address, "", "")
    return (host.strip("[]") or "127.0.0.1", int(port) if port.isdigit() else default_port)


def check_firestore(settings: Settings | None = None) -> None:
    """Raise `ServiceUnreachableError` unless Firestore (or its emulator) answers within the timeout."""
    settings = settings or get_settings()
    timeout = settings.connect_timeout_seconds
    if settings.firestore_emulator_host:
        host, port = _host_port(settings.firestore_emulator_host, 8080)
        if _connect(host, port, timeout) is not None:
            raise ServiceUnreachableError("Firestore emulator", f"{host}:{port}")
        return
    from emailsync.firestore.client import get_firestore_client

    where = f"project {settings.google_cloud_project}"
    try:
        get_firestore_client().collection("syncState").document("_reachability").get(
            timeout=timeout, retry=None
        )
    except Exception as exc:
        raise ServiceUnreachableError(
            "Firestore", where, str(exc).splitlines()[0] if str(exc) else ""
        ) from exc


def check_gmail(settings: Settings | None = None) -> None:
    """Raise `ServiceUnreachableError` unless the Gmail API endpoint accepts a connection in time."""
    settings = settings or get_settings()
    endpoint = settings.gmail_api_endpoint or GOOGLE_GMAIL_ENDPOINT
    parts = urlsplit(endpoint)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    if _connect(host, port, settings.connect_timeout_seconds) is not None:
        raise ServiceUnreachableError("Gmail API", endpoint.rstrip("/"))
