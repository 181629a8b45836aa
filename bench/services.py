"""What the end-to-end benchmarks run against: the Firestore emulator and a temporary Prefect API.

Benchmarks run one after another in one process (`make bench`), and each points `GMAIL_API_ENDPOINT`,
the quota and the emulators at its own servers, run by run. `restored_environment` puts the whole
environment back afterwards, so no benchmark inherits another's servers.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from google.cloud.firestore import Client

    from emailsync.local.firestore_emulator import FirestoreEmulator

PREFECT_STARTUP_TIMEOUT_SECONDS = 120


@contextmanager
def restored_environment() -> Iterator[None]:
    """`os.environ` as it was once the block ends, with settings and cached clients dropped."""
    from emailsync.config import get_settings
    from emailsync.firestore.client import reset_clients

    saved = dict(os.environ)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)
        get_settings.cache_clear()
        reset_clients()


@contextmanager
def firestore_and_prefect(project: str) -> Iterator[tuple[FirestoreEmulator, Client]]:
    """A started Firestore emulator (in the environment) and a temporary Prefect API, for one benchmark."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    from prefect.testing.utilities import prefect_test_harness

    from emailsync.firestore.client import get_firestore_client, reset_clients
    from emailsync.local.firestore_emulator import FirestoreEmulator

    with (
        restored_environment(),
        FirestoreEmulator() as emulator,
        prefect_test_harness(server_startup_timeout=PREFECT_STARTUP_TIMEOUT_SECONDS),
    ):
        os.environ.update(emulator.environ(project))
        reset_clients()
        yield emulator, get_firestore_client(project)
