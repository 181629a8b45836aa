"""What every repository (and the progress writer) shares: the collection names of DESIGN.md, the
client a repository talks to, and the one way to change a document conditionally (`compare_and_set`).

The repositories are split by collection family: `users.py` (appUsers, families, providerUsers,
providerCredentials), `emails.py` (providerUsers/{id}/emails) and `sync_state.py` (syncState: the lease
and the checkpoint). `syncProgress` has its one writer in `progress.py`.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import firestore

from emailsync.errors import RetriableError
from emailsync.firestore.client import get_firestore_client

APP_USERS = "appUsers"
FAMILIES = "families"
PROVIDER_USERS = "providerUsers"
PROVIDER_CREDENTIALS = "providerCredentials"
EMAILS = "emails"
SYNC_STATE = "syncState"

# Read-decide-write on one document is a compare-and-set: the write is conditioned on the version that
# was read (`update_time`, or "does not exist yet"), so of many concurrent writers exactly one lands and
# the others decide again on fresh data. (Firestore transactions would do the same but lock on read;
# the emulator resolves lock conflicts only by a 2 s timeout, so 20 contenders can livelock there.)
COMPARE_AND_SET_ATTEMPTS = 25
COMPARE_AND_SET_JITTER_SECONDS = 0.02


def compare_and_set(
    client: firestore.Client,
    document: firestore.DocumentReference,
    decide: Callable[[firestore.DocumentSnapshot], dict[str, Any] | None],
) -> bool:
    """Atomically read `document`, let `decide` compute the write, and write it only if nothing changed.

    `decide(snapshot)` returns the fields to write (field paths for an existing document, a whole
    document for a missing one) or None to write nothing; it may raise to refuse. Returns whether a
    write landed. A document that keeps changing under us raises `RetriableError`.
    """
    for _attempt in range(COMPARE_AND_SET_ATTEMPTS):
        snapshot = document.get()
        fields = decide(snapshot)
        if fields is None:
            return False
        try:
            if snapshot.exists:
                precondition = client.write_option(last_update_time=snapshot.update_time)
                document.update(fields, option=precondition)
            else:
                document.create(fields)
            return True
        except (gexc.FailedPrecondition, gexc.AlreadyExists, gexc.NotFound):
            time.sleep(random.uniform(0, COMPARE_AND_SET_JITTER_SECONDS))  # lost the race: decide again
    raise RetriableError(f"{document.path} kept changing during {COMPARE_AND_SET_ATTEMPTS} attempts")


class Repository:
    """Takes an optional `firestore.Client` (default: `get_firestore_client()`); speaks pydantic models
    (emailsync/models.py)."""

    def __init__(self, client: firestore.Client | None = None) -> None:
        self.client = client or get_firestore_client()
