"""Freshness with Gmail push: how long a change takes to reach Firestore.

Real Firestore and Pub/Sub emulators, the local Gmail server (production quota, its users.watch
publishing to Pub/Sub), a real Prefect API and the push service as `emailsync watch` runs it
(streaming pull, per-user coalescing, in-process `email_sync` with trigger "push"). One back-filled user
receives 50 new messages at random intervals through the Gmail API (messages.insert, or the server's
own delivery where the server has no insert yet); latency = insert → the document stored with its
enrichment (summary + embedding), p50/p95. Then label changes (messages.modify) → `labelIds` updated,
when the sync applies label changes.
"""

from __future__ import annotations

import os
import random
import statistics
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

from emailsync.demo_push import insert_message

REPO_ROOT = Path(__file__).resolve().parents[1]
PROJECT = "omnibutler-bench-push"
USER, TOKEN, ADDRESS = "pu-fresh", "token-pu-fresh", "fresh.user@example.com"
INSERTS = int(os.environ.get("BENCH_PUSH_INSERTS", "50"))
LABEL_CHANGES = 10
INTERVAL_SECONDS = (0.3, 2.5)
REFLECT_TIMEOUT_SECONDS = 60.0


def _raw(n: int) -> bytes:
    return (
        f"From: news{n}@example.org\r\nTo: {ADDRESS}\r\nSubject: fresh mail {n}\r\n"
        f"Date: {datetime.now(UTC).strftime('%a, %d %b %Y %H:%M:%S +0000')}\r\n"
        f"Message-ID: <fresh-{n}-{uuid.uuid4().hex}@example.org>\r\n\r\n"
        f"Message {n}: the quarterly report is attached, please review it before Friday.\r\n"
    ).encode()


def _insert(server: Any, raw: bytes) -> str:
    return insert_message(server, TOKEN, raw)


def _modify(server: Any, message_id: str) -> bool:
    response = requests.post(
        f"{server.url}gmail/v1/users/me/messages/{message_id}/modify",
        json={"addLabelIds": ["STARRED"]},
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=30,
    )
    return response.status_code == 200


class Watcher:
    """Polls Firestore for the awaited documents and records when each one got what it waits for."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.waiting: dict[str, tuple[float, str]] = {}  # message id -> (since, "enriched" | "starred")
        self.latencies: dict[str, list[float]] = {"enriched": [], "starred": []}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def expect(self, message_id: str, what: str, since: float) -> None:
        with self._lock:
            self.waiting[message_id] = (since, what)

    def _poll(self) -> None:
        emails = self.client.collection("providerUsers").document(USER).collection("emails")
        while not self._stop.wait(0.1):
            with self._lock:
                pending = dict(self.waiting)
            if not pending:
                continue
            now = time.perf_counter()
            for snapshot in self.client.get_all([emails.document(i) for i in pending]):
                data = snapshot.to_dict() if snapshot.exists else None
                since, what = pending[snapshot.id]
                done = bool(data) and (
                    (data.get("embedding") is not None and bool(data.get("summary")))
                    if what == "enriched"
                    else "STARRED" in (data.get("labelIds") or [])
                )
                if done:
                    with self._lock:
                        self.waiting.pop(snapshot.id, None)
                        self.latencies[what].append(now - since)

    def start(self) -> Watcher:
        self._thread.start()
        return self

    def drain(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.waiting and time.monotonic() < deadline:
            time.sleep(0.1)
        self._stop.set()


def _percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "max": None}
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, max(0, round(0.95 * len(ordered)) - 1))]
    return {"p50": round(statistics.median(ordered), 2), "p95": round(p95, 2), "max": round(ordered[-1], 2)}


def run() -> dict[str, Any]:
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    from prefect.testing.utilities import prefect_test_harness

    from bench.services import restored_environment
    from deployments.push import PushService, PushSyncRunner
    from emailsync.config import get_settings
    from emailsync.enrichment import get_enricher
    from emailsync.firestore.client import get_firestore_client, reset_clients
    from emailsync.local.firestore_emulator import FirestoreEmulator
    from emailsync.local.gmail_server.server import GmailApiServer
    from emailsync.local.mailbox import Mailbox, read_mbox
    from emailsync.local.pubsub_emulator import PubSubEmulator
    from emailsync.local.seed import seed_account
    from emailsync.push.pubsub import PushTarget
    from flows.email_sync import email_sync

    raws = read_mbox(REPO_ROOT / "samples" / "sample.mbox")
    figures: dict[str, Any] = {"inserts": INSERTS, "interval_seconds": list(INTERVAL_SECONDS)}
    with (
        restored_environment(),
        FirestoreEmulator() as emulator,
        PubSubEmulator() as pubsub,
        prefect_test_harness(server_startup_timeout=120),
    ):
        os.environ.update({**emulator.environ(PROJECT), **pubsub.environ()})
        get_settings.cache_clear()
        reset_clients()
        with GmailApiServer(Mailbox.from_raw_messages(raws[:1])) as server:
            os.environ["GMAIL_API_ENDPOINT"] = server.url
            get_settings.cache_clear()
            client = get_firestore_client(PROJECT)
            server.add_mailbox(TOKEN, Mailbox.from_raw_messages(raws[:30], email_address=ADDRESS))
            seed_account(client, provider_user_id=USER, email=ADDRESS, token=TOKEN, gmail_active=True)
            get_enricher().embed_query("warm-up")  # a running watcher has its model loaded
            email_sync(USER, trigger="connect")
            target = PushTarget(
                topic=f"projects/{PROJECT}/topics/gmail",
                subscription=f"projects/{PROJECT}/subscriptions/gmail",
            )
            service = PushService(target, client, runner=PushSyncRunner(client), renew_on_start=False).start()
            service.watches.register(USER)
            assert service.listener.connected(30), "the push listener did not connect"
            watcher = Watcher(client).start()
            rng = random.Random(11)
            started = time.perf_counter()
            for n in range(INSERTS):
                time.sleep(rng.uniform(*INTERVAL_SECONDS))
                since = time.perf_counter()
                watcher.expect(_insert(server, _raw(n)), "enriched", since)
            watcher.drain(REFLECT_TIMEOUT_SECONDS)
            figures["insert_to_enriched_seconds"] = _percentiles(watcher.latencies["enriched"])
            figures["inserts_reflected"] = len(watcher.latencies["enriched"])
            figures["push_syncs"] = service.coalescer.runs(USER)
            figures["notifications_received"] = service.listener.received
            figures["wall_seconds"] = round(time.perf_counter() - started, 1)

            labels = Watcher(client).start()
            ids = [m.id for m in server.mailbox_for(TOKEN).newest_first()[:LABEL_CHANGES]]
            applied = 0
            for message_id in ids:
                time.sleep(rng.uniform(*INTERVAL_SECONDS))
                since = time.perf_counter()
                if _modify(server, message_id):
                    applied += 1
                    labels.expect(message_id, "starred", since)
            labels.drain(REFLECT_TIMEOUT_SECONDS if applied else 0)
            if not applied:
                figures["label_change_to_reflected_seconds"] = (
                    "not measured: no messages.modify on this server"
                )
            elif not labels.latencies["starred"]:
                figures["label_change_to_reflected_seconds"] = (
                    "not measured: the sync does not apply label changes yet (mirror-sync)"
                )
            else:
                figures["label_change_to_reflected_seconds"] = _percentiles(labels.latencies["starred"])
                figures["label_changes_reflected"] = f"{len(labels.latencies['starred'])}/{applied}"
            service.stop()
    figures["goal"] = "insert → stored and enriched p95 <= 5 s"
    return figures
