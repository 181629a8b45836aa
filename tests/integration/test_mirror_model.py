"""Model-based test of the exact mirror (DESIGN.md, "The mirror").

Each seed plays a random sequence of at least 200 Gmail changes through the local server's Gmail API
(insert, label add/remove, trash, untrash, spam, unspam, delete, batchModify), interleaved with syncs:
the first a backfill, later ones incremental, some after history expired (the server keeps only a few
dozen history records, so long gaps reconcile) and some SIGKILLed at a random point (a subprocess
`python -m flows.email_sync`; the next sync takes the expired lease over). After every sync that
completes, Firestore must equal Gmail: the ids of `messages.list`'s default answer with their labelIds,
every message enriched, and no message ever enriched twice (its `enrichment.enrichedAt` never changes
once seen). Seeds alternate `EMAILSYNC_DELETED_MAIL=remove` and `keep`.

`make test` runs a few seeds; `make soak` runs `SOAK_SEEDS` (default 50) more, marked `soak`. A failure
names its seed in the test id and in the assertion; rerun one with
`MIRROR_SEEDS=17 pytest tests/integration/test_mirror_model.py`.
"""

from __future__ import annotations

import base64
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.cloud import firestore

from emailsync.config import get_settings
from emailsync.enrichment import get_enricher
from emailsync.firestore.client import get_firestore_client, temporary_environment
from emailsync.local.firestore_emulator import FirestoreEmulator
from emailsync.local.gmail_server.server import GmailApiServer
from emailsync.local.mailbox import Mailbox
from emailsync.local.seed import seed_account
from tests.fakes.openai_server import OpenAICompatibleServer
from tests.fixtures.gmail import REPO_ROOT, gmail_api
from tests.fixtures.prefect import PrefectTestServer

pytestmark = [pytest.mark.integration, pytest.mark.prefect]

PROJECT = "omnibutler-mirror-model"
DEFAULT_SEEDS = (1, 2)
SOAK_SEEDS = int(os.environ.get("SOAK_SEEDS") or 0)
CHANGES = 200
HISTORY_RETENTION = 60  # records: a gap of more changes than this between two syncs expires history
LEASE_SECONDS = 2
INITIAL_MESSAGES = 24
KEEP_LABELS = ("UNREAD", "STARRED", "IMPORTANT", "INBOX", "CATEGORY_PROMOTIONS")


def _seeds() -> list[Any]:
    """The default seeds, plus `SOAK_SEEDS` more marked `soak` (run only under `-m soak`)."""
    if os.environ.get("MIRROR_SEEDS"):
        return [int(seed) for seed in os.environ["MIRROR_SEEDS"].split(",")]
    soaks = [pytest.param(seed, marks=pytest.mark.soak) for seed in range(1000, 1000 + SOAK_SEEDS)]
    return [*DEFAULT_SEEDS, *soaks]


# ------------------------------------------------------------------------------------------ harness


@pytest.fixture(scope="module")
def mirror_firestore() -> Iterator[firestore.Client]:
    """An emulator of this module alone: the SIGKILLed syncs must never touch the shared one."""
    emulator = FirestoreEmulator().start()
    try:
        with temporary_environment(emulator.environ(PROJECT)):
            yield get_firestore_client(PROJECT)
    finally:
        emulator.stop()


@pytest.fixture(autouse=True)
def _fresh_settings() -> Iterator[None]:
    yield
    get_settings.cache_clear()
    get_enricher.cache_clear()  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def fake_openai() -> Iterator[OpenAICompatibleServer]:
    """Enrichment over loopback: deterministic, fast, and the same in the sync subprocesses."""
    with OpenAICompatibleServer(api_key="model-key") as server:
        yield server


class GmailUser:
    """One Gmail user driven through the server's Gmail API with google-api-python-client."""

    def __init__(self, server: GmailApiServer, token: str) -> None:
        service = gmail_api(server, token)
        self.users = service.users()
        self.messages = self.users.messages()

    def insert(self, raw: bytes, label_ids: list[str]) -> str:
        body = {"raw": base64.urlsafe_b64encode(raw).decode(), "labelIds": label_ids}
        return str(self.messages.insert(userId="me", body=body).execute()["id"])

    def modify(self, message_id: str, add: list[str], remove: list[str]) -> None:
        body = {"addLabelIds": add, "removeLabelIds": remove}
        self.messages.modify(userId="me", id=message_id, body=body).execute()

    def batch_modify(self, ids: list[str], add: list[str], remove: list[str]) -> None:
        body = {"ids": ids, "addLabelIds": add, "removeLabelIds": remove}
        self.messages.batchModify(userId="me", body=body).execute()

    def trash(self, message_id: str) -> None:
        self.messages.trash(userId="me", id=message_id).execute()

    def untrash(self, message_id: str) -> None:
        self.messages.untrash(userId="me", id=message_id).execute()

    def delete(self, message_id: str) -> None:
        self.messages.delete(userId="me", id=message_id).execute()

    def create_label(self, name: str) -> str:
        return str(self.users.labels().create(userId="me", body={"name": name}).execute()["id"])

    def mirror_view(self) -> dict[str, list[str]]:
        """What the mirror must hold: `messages.list`'s default answer, each id with its labelIds."""
        ids: list[str] = []
        token = None
        while True:
            page = self.messages.list(userId="me", maxResults=500, pageToken=token).execute()
            ids += [m["id"] for m in page.get("messages") or []]
            token = page.get("nextPageToken")
            if not token:
                break
        return {
            i: sorted(self.messages.get(userId="me", id=i, format="minimal").execute().get("labelIds") or [])
            for i in ids
        }

    def all_ids(self) -> list[str]:
        page = self.messages.list(userId="me", maxResults=500, includeSpamTrash=True).execute()
        return [m["id"] for m in page.get("messages") or []]


def stored_view(
    client: firestore.Client, provider_user_id: str
) -> tuple[dict[str, list[str]], dict[str, Any]]:
    """The mirror as stored (tombstones left out) and every stored document's `enrichment.enrichedAt`."""
    emails = client.collection("providerUsers").document(provider_user_id).collection("emails")
    mirrored: dict[str, list[str]] = {}
    enriched_at: dict[str, Any] = {}
    for snapshot in emails.select(["labelIds", "deletedAt", "enrichment"]).stream():
        data = snapshot.to_dict() or {}
        enriched_at[snapshot.id] = (data.get("enrichment") or {}).get("enrichedAt")
        if data.get("deletedAt") is None:
            mirrored[snapshot.id] = sorted(data.get("labelIds") or [])
    return mirrored, enriched_at


class Model:
    """The random Gmail changes of one seed."""

    def __init__(self, rng: random.Random, gmail: GmailUser, pool: list[bytes], user_label: str) -> None:
        self.rng, self.gmail, self.pool = rng, gmail, pool
        self.labels = (*KEEP_LABELS, user_label)
        self.inserted = 0
        self.log: list[str] = []

    def change(self) -> None:
        rng, gmail = self.rng, self.gmail
        ids = gmail.all_ids()
        kind = rng.choices(
            ["insert", "labels", "trash", "untrash", "spam", "unspam", "delete", "batch"],
            weights=[4, 6, 2, 2, 1, 1, 1, 2],
        )[0]
        if kind == "insert" or not ids:
            self.inserted += 1
            raw = b"X-Model-Sequence: %d\n" % self.inserted + rng.choice(self.pool)
            labels = rng.choice(
                [["INBOX", "UNREAD"], ["INBOX"], ["DRAFT"], ["SPAM"], [self.labels[-1], "UNREAD"]]
            )
            self.log.append(f"insert {gmail.insert(raw, labels)} {labels}")
            return
        target = rng.choice(ids)
        if kind == "labels":
            add = rng.sample(self.labels, rng.randint(0, 2))
            remove = [label for label in rng.sample(self.labels, rng.randint(0, 2)) if label not in add]
            gmail.modify(target, add, remove)
        elif kind == "trash":
            gmail.trash(target)
        elif kind == "untrash":
            gmail.untrash(target)
        elif kind == "spam":
            gmail.modify(target, ["SPAM"], ["INBOX"])
        elif kind == "unspam":
            gmail.modify(target, ["INBOX"], ["SPAM"])
        elif kind == "delete":
            gmail.delete(target)
        else:
            chosen = rng.sample(ids, min(len(ids), rng.randint(2, 6)))
            add = rng.sample(KEEP_LABELS, 1)
            gmail.batch_modify(
                chosen, add, [label for label in rng.sample(KEEP_LABELS, 1) if label not in add]
            )
            target = ",".join(chosen)
        self.log.append(f"{kind} {target}")


def run_in_process(provider_user_id: str) -> Any:
    from flows.email_sync import email_sync

    for _ in range(30):  # a killed sync's lease (and Prefect slot) expire after LEASE_SECONDS
        summary = email_sync(provider_user_id, trigger="schedule")
        if not summary.skipped:
            return summary
        time.sleep(0.5)
    raise AssertionError("the killed sync's lease was never taken over")


def run_and_kill(
    provider_user_id: str, environment: dict[str, str], server: GmailApiServer, rng: random.Random, log: Path
) -> bool:
    """A sync subprocess SIGKILLed at a random point once it talks to Gmail; True when it was killed."""
    calls_before = sum(server.stats.requests_by_method.values())
    with log.open("ab") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "flows.email_sync", provider_user_id, "--trigger", "schedule"],
            cwd=REPO_ROOT,
            env=environment,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 120
            while process.poll() is None and sum(server.stats.requests_by_method.values()) == calls_before:
                assert time.monotonic() < deadline, "the sync subprocess never reached Gmail"
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, 1.2))
            killed = process.poll() is None
            if killed:
                process.send_signal(signal.SIGKILL)
        finally:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=30)
    return killed


# ------------------------------------------------------------------------------------------ the test


@pytest.mark.parametrize("seed", _seeds(), ids=lambda seed: f"seed-{seed}")
def test_after_random_gmail_changes_syncs_expiries_and_kills_firestore_mirrors_gmail_exactly(
    seed: int,
    mirror_firestore: firestore.Client,
    fake_openai: OpenAICompatibleServer,
    prefect_server: PrefectTestServer,
    make_gmail_server: Any,
    sample_mailbox: Mailbox,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    rng = random.Random(seed)
    deleted_mail = "keep" if seed % 2 else "remove"
    messages = sample_mailbox.newest_first()
    start = rng.randrange(len(messages) - INITIAL_MESSAGES)
    mailbox = Mailbox.from_raw_messages(
        [m.raw for m in messages[start : start + INITIAL_MESSAGES]], shift_dates=True
    )
    server = make_gmail_server(mailbox, quota_units_per_second=None, history_retention=HISTORY_RETENTION)
    provider_user_id, token = f"pu-model-{seed}", f"model-token-{seed}"
    seed_account(
        mirror_firestore,
        provider_user_id=provider_user_id,
        family_id=f"family-{seed}",
        token=token,
        gmail_active=True,
    )
    environment = {
        "GMAIL_API_ENDPOINT": server.url,
        "EMAILSYNC_QUOTA_UNITS_PER_SECOND": "100000",
        "EMAILSYNC_LEASE_TIMEOUT_SECONDS": str(LEASE_SECONDS),
        "EMAILSYNC_BATCH_SIZE": "5",
        "EMAILSYNC_DELETED_MAIL": deleted_mail,
        "OPENAI_API_KEY": fake_openai.api_key,
        "OPENAI_BASE_URL": fake_openai.base_url,
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    get_enricher.cache_clear()  # type: ignore[attr-defined]
    child_environment = {**os.environ, **prefect_server.environ()}

    gmail = GmailUser(server, token)
    user_label = gmail.create_label("family")
    model = Model(
        rng, gmail, [m.raw for m in messages[:start] + messages[start + INITIAL_MESSAGES :]], user_label
    )
    first_enriched: dict[str, Any] = {}
    syncs, kills, changes = [], 0, 0
    reconciles, forced_expiry = 0, False
    while changes < CHANGES or not syncs or syncs[-1] == "killed":
        burst = rng.randint(10, 50) if changes < CHANGES else 0
        for _ in range(burst):
            model.change()
        changes += burst
        expiring = len(syncs) > syncs.count("killed") and not forced_expiry
        if expiring:  # besides gaps longer than the history kept: the next sync must reconcile
            mailbox_of_user = server.mailbox_for(token)
            server.expire_history_before(mailbox_of_user.history_id + 1, token)
            forced_expiry = True
        what = f"seed {seed} ({deleted_mail}), after {changes} changes, syncs {syncs}"
        log = tmp_path / "killed-syncs.log"
        kill_now = not expiring and (syncs.count("killed") == 0 or rng.random() < 0.25)
        if (
            changes < CHANGES
            and kill_now
            and run_and_kill(provider_user_id, child_environment, server, rng, log)
        ):
            kills += 1
            syncs.append("killed")
            continue
        summary = run_in_process(provider_user_id)
        syncs.append("reconciled" if summary.reconciled else str(summary.mode))
        reconciles += summary.reconciled
        expected = gmail.mirror_view()
        mirrored, enriched_at = stored_view(mirror_firestore, provider_user_id)
        assert mirrored == expected, (
            f"{what}: Firestore differs from Gmail (last sync {summary.mode}, "
            f"reconciled {summary.reconciled}); missing {sorted(set(expected) - set(mirrored))}, "
            f"extra {sorted(set(mirrored) - set(expected))}, "
            f"labels differ {[i for i in expected if i in mirrored and mirrored[i] != expected[i]]}; "
            f"last changes {model.log[-8:]}"
        )
        assert all(enriched_at[i] is not None for i in mirrored), f"{what}: a mirrored email is not enriched"
        for message_id, stamp in enriched_at.items():
            first = first_enriched.setdefault(message_id, stamp)
            assert stamp == first, f"{what}: message {message_id} was enriched again"
    assert changes >= CHANGES and reconciles >= 1, f"seed {seed}: {syncs}, {reconciles} reconciles"
    print(
        f"seed {seed} ({deleted_mail}): {changes} changes, syncs {syncs}, "
        f"{kills} killed, {reconciles} reconciles"
    )
