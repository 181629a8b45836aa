"""The one Firestore client factory. Everything that talks to Firestore gets its client here."""

from __future__ import annotations

import os
import threading

from google.auth.credentials import AnonymousCredentials
from google.cloud import firestore

from emailsync.config import get_settings

_lock = threading.Lock()
_clients: dict[tuple[str, str | None], firestore.Client] = {}


def get_firestore_client(project: str | None = None) -> firestore.Client:
    """A cached `firestore.Client` for `project` (default: `GOOGLE_CLOUD_PROJECT`).

    With `FIRESTORE_EMULATOR_HOST` set the client talks to the emulator with anonymous credentials
    (the Python client bypasses security rules there, as the Admin SDK does in production).
    """
    settings = get_settings()
    project = project or settings.google_cloud_project
    emulator = os.environ.get("FIRESTORE_EMULATOR_HOST") or None
    key = (project, emulator)
    with _lock:
        client = _clients.get(key)
        if client is None:
            if emulator:
                client = firestore.Client(project=project, credentials=AnonymousCredentials())
            else:
                client = firestore.Client(project=project)
            _clients[key] = client
        return client


def reset_clients() -> None:
    """Forget cached clients (tests that switch emulator or project)."""
    with _lock:
        _clients.clear()
