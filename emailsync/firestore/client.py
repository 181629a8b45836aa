"""The one Firestore client factory. Everything that talks to Firestore gets its client here."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator, Mapping

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


@contextlib.contextmanager
def temporary_environment(values: Mapping[str, str]) -> Iterator[None]:
    """`values` in `os.environ` for the block (e.g. `FirestoreEmulator.environ()`), then as before.

    Settings and cached clients are dropped on entry and on exit, so both follow the environment.
    """
    previous = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    get_settings.cache_clear()
    reset_clients()
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        get_settings.cache_clear()
        reset_clients()
