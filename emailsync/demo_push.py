"""The demo's Gmail push act: after the backfill a new message arrives through the Gmail API, Gmail's
push notification reaches the listener through Pub/Sub, and an incremental sync (trigger "push")
stores and enriches it. Shows how long that took, from the insert to the enriched document.
"""

from __future__ import annotations

import base64
import contextlib
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import requests
from google.cloud import firestore
from rich.console import Console

from emailsync.models import SyncStatus, SyncTrigger

DEMO_TOPIC_NAME = "gmail-push"
PUSH_TIMEOUT_SECONDS = 60.0
TERMINAL = {SyncStatus.COMPLETED.value, SyncStatus.FAILED.value}


def start_pubsub_emulator(stack: contextlib.ExitStack) -> Future[str] | None:
    """The Pub/Sub emulator for Gmail push (Java, a few seconds), started in the background."""
    from emailsync.local.pubsub_emulator import (
        PubSubEmulator,
        PubSubEmulatorNotFoundError,
        find_pubsub_emulator,
    )

    try:
        find_pubsub_emulator()
    except PubSubEmulatorNotFoundError:
        return None
    emulator = PubSubEmulator()
    stack.callback(emulator.stop)
    starter = stack.enter_context(ThreadPoolExecutor(max_workers=1, thread_name_prefix="pubsub-emulator"))
    return starter.submit(lambda: emulator.start().host)


def demo_message(to: str) -> bytes:
    now = datetime.now(UTC)
    return (
        f"From: Sam Lee <sam@example.org>\r\nTo: {to}\r\nSubject: Dinner on Friday?\r\n"
        f"Date: {now.strftime('%a, %d %b %Y %H:%M:%S +0000')}\r\n"
        f"Message-ID: <demo-{uuid.uuid4().hex}@example.org>\r\n\r\n"
        "Hi Alex, are we still on for dinner at the Italian place on Friday at 7? "
        "I can book a table for four if the kids are coming too.\r\n"
    ).encode()


def insert_message(gmail: Any, token: str, raw: bytes) -> str:
    """messages.insert through the Gmail API (the server's own delivery where it has no insert)."""
    response = requests.post(
        f"{gmail.url}gmail/v1/users/me/messages",
        json={"raw": base64.urlsafe_b64encode(raw).decode(), "labelIds": ["INBOX", "UNREAD"]},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    if response.status_code == 200:
        return str(response.json()["id"])
    return str(gmail.add_message(raw, token=token))


def show_push_sync(
    client: firestore.Client, gmail: Any, provider_user_id: str, token: str, to: str, console: Console
) -> bool:
    """Insert one message and wait until the push-triggered sync stored it enriched; True if it did."""
    console.print("\n[bold]→ a new message arrives[/] (messages.insert through the Gmail API)")
    inserted = time.perf_counter()
    message_id = insert_message(gmail, token, demo_message(to))
    document = (
        client.collection("providerUsers")
        .document(provider_user_id)
        .collection("emails")
        .document(message_id)
    )
    with console.status("waiting for Gmail's push notification and the incremental sync..."):
        deadline = time.monotonic() + PUSH_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            data = document.get(["subject", "summary", "tags", "embedding"]).to_dict() or {}
            if data.get("embedding") is not None and data.get("summary"):
                break
            time.sleep(0.2)
        else:
            console.print(f"[red]the new message was not stored within {PUSH_TIMEOUT_SECONDS:.0f} s[/]")
            return False
    elapsed = time.perf_counter() - inserted
    sync = _latest_push_sync(client, provider_user_id)
    deadline = time.monotonic() + 15
    while sync is not None and sync.get("status") not in TERMINAL and time.monotonic() < deadline:
        time.sleep(0.2)  # stored before the sync writes its completed document
        sync = _latest_push_sync(client, provider_user_id)
    console.print(
        f"[green]✓[/] pushed, synced and enriched {elapsed:.1f} s after the insert: {data.get('subject')!r}"
    )
    console.print(f"  summary: {data.get('summary')}")
    console.print(f"  tags: {', '.join(data.get('tags') or []) or '-'}")
    if sync is not None:
        console.print(
            f"  sync {sync.get('syncId')} (trigger push, {sync.get('details', {}).get('mode')}, "
            f"{sync.get('status')}) — shown on the progress page too"
        )
    return True


def _latest_push_sync(client: firestore.Client, provider_user_id: str) -> dict[str, Any] | None:
    from google.cloud.firestore_v1.base_query import FieldFilter

    query = client.collection("syncProgress").where(
        filter=FieldFilter("providerUserId", "==", provider_user_id)
    )
    pushes = [
        doc.to_dict() or {}
        for doc in query.stream()
        if ((doc.to_dict() or {}).get("details") or {}).get("trigger") == SyncTrigger.PUSH.value
    ]
    return max(pushes, key=lambda d: d.get("startedAt")) if pushes else None
