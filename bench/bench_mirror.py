"""The exact mirror's costs: real Firestore emulator, local Gmail server, real Prefect API, local enrichment.

One 3,000-message mailbox (the sample or the corpus, replicated with distinct Message-IDs, dated over the
last four weeks) at Gmail's 250 units/s:

- a fresh backfill: quota units (the server's count), seconds, messages enriched;
- 1,000 label changes (read, star, a user label, archive), then an incremental sync: quota units,
  seconds, `messages.get` calls (goal: none) and messages enriched (goal: none);
- some real changes (trash, delete, new mail, relabelling), then history expired, then the sync that
  reconciles: quota units ÷ the backfill's (goal ≤ 0.25), seconds, messages downloaded and enriched
  (goal: only the new ones).

Run with `python -m bench.run mirror`.
"""

from __future__ import annotations

import os
import random
import time
from typing import Any

from bench.bench_sync import _dense_mailbox, _raw_messages, _replicated

PROJECT = "omnibutler-bench-mirror"
QUOTA_UNITS_PER_SECOND = 250.0
TARGET_MESSAGES = 3000
LABEL_CHANGES = 1000
TOKEN = "mirror-bench-token"
RECONCILE_CHANGES = {"trashed": 40, "deleted": 20, "new": 30, "relabelled": 200}


def _sync(provider_user_id: str) -> Any:
    from flows.email_sync import email_sync

    return email_sync(provider_user_id, trigger="manual")


def _measured(server: Any, provider_user_id: str) -> dict[str, Any]:
    server.reset_stats()
    started = time.perf_counter()
    summary = _sync(provider_user_id)
    seconds = time.perf_counter() - started
    stats = server.stats
    return {
        "mode": summary.mode.value if summary.mode else None,
        "reconciled": summary.reconciled,
        "seconds": round(seconds, 2),
        "quota_units": stats.quota_units,
        "calls": dict(stats.requests_by_method),
        "messages_get": stats.requests_by_method.get("messages.get", 0),
        "emails_enriched": summary.emails_enriched,
        "emails_stored": summary.emails_stored,
        "labels_updated": summary.labels_updated,
        "emails_removed": summary.emails_removed,
    }


def _label_changes(mailbox: Any, rng: random.Random, count: int, user_label: str) -> None:
    ids = [message.id for message in mailbox.newest_first()]
    moves = [
        ([], ["UNREAD"]),  # read
        (["UNREAD"], []),
        (["STARRED"], []),
        ([], ["STARRED"]),
        ([user_label], []),
        ([], ["INBOX"]),  # archived
    ]
    for _ in range(count):
        add, remove = rng.choice(moves)
        mailbox.modify(rng.choice(ids), add, remove)


def _real_changes(mailbox: Any, rng: random.Random, extra_raws: list[bytes], user_label: str) -> None:
    ids = [message.id for message in mailbox.newest_first()]
    rng.shuffle(ids)
    trashed = ids[: RECONCILE_CHANGES["trashed"]]
    deleted = ids[len(trashed) : len(trashed) + RECONCILE_CHANGES["deleted"]]
    relabelled = ids[len(trashed) + len(deleted) :][: RECONCILE_CHANGES["relabelled"]]
    for message_id in trashed:
        mailbox.trash(message_id)
    for message_id in deleted:
        mailbox.delete(message_id)
    for message_id in relabelled:
        mailbox.modify(message_id, [user_label, "STARRED"], ["UNREAD"])
    for index, raw in enumerate(extra_raws[: RECONCILE_CHANGES["new"]]):
        mailbox.insert_message(b"X-Bench-New: %d\n" % index + raw, ["INBOX", "UNREAD"])


def run() -> dict[str, Any]:
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    from prefect.testing.utilities import prefect_test_harness

    from emailsync.config import get_settings
    from emailsync.enrichment import get_enricher
    from emailsync.firestore.client import get_firestore_client, temporary_environment
    from emailsync.firestore.emails import EmailRepository
    from emailsync.local.firestore_emulator import FirestoreEmulator
    from emailsync.local.gmail_server.server import GmailApiServer
    from emailsync.local.seed import seed_account

    source, raws = _raw_messages()
    replicas = -(-TARGET_MESSAGES // len(raws))
    copies = _replicated(raws, replicas + 1)
    mailbox_raws, extra_raws = copies[:TARGET_MESSAGES], copies[TARGET_MESSAGES:]
    rng = random.Random(20261203)
    figures: dict[str, Any] = {"source": source, "quota_units_per_second": QUOTA_UNITS_PER_SECOND}
    with (
        FirestoreEmulator() as emulator,
        prefect_test_harness(server_startup_timeout=120),
        GmailApiServer(_dense_mailbox(mailbox_raws), quota_units_per_second=QUOTA_UNITS_PER_SECOND) as server,
        temporary_environment(
            {
                **emulator.environ(PROJECT),
                "GMAIL_API_ENDPOINT": server.url,
                "EMAILSYNC_QUOTA_UNITS_PER_SECOND": str(QUOTA_UNITS_PER_SECOND),
            }
        ),
    ):
        client = get_firestore_client(PROJECT)
        account = seed_account(client, provider_user_id="pu-mirror", token=TOKEN, gmail_active=True)
        get_enricher().embed_query("warm-up")  # a worker keeps the model loaded between syncs
        mailbox = server.mailbox_for(TOKEN)
        user_label = mailbox.create_label("family").id
        figures["messages"] = len(mailbox)

        backfill = _measured(server, account.provider_user_id)
        figures["backfill"] = backfill

        _label_changes(mailbox, rng, LABEL_CHANGES, user_label)
        incremental = _measured(server, account.provider_user_id)
        figures["incremental_after_1000_label_changes"] = incremental

        _real_changes(mailbox, rng, extra_raws, user_label)
        server.expire_history_before(mailbox.history_id + 1, TOKEN)
        reconcile = _measured(server, account.provider_user_id)
        figures["reconcile_after_history_expired"] = reconcile
        figures["reconcile_changes"] = RECONCILE_CHANGES
        figures["reconcile_units_ratio_to_backfill"] = round(
            reconcile["quota_units"] / backfill["quota_units"], 4
        )
        figures["reconcile_seconds_ratio_to_backfill"] = round(reconcile["seconds"] / backfill["seconds"], 4)
        stored = EmailRepository(client).count(account.provider_user_id)
        figures["stored_after_reconcile"] = stored
        figures["gmail_after_reconcile"] = len(mailbox.search(excluded_label_ids=("SPAM", "TRASH"))[0])
        figures["goals"] = {
            "incremental_without_messages_get": incremental["messages_get"] == 0,
            "incremental_without_enrichment": incremental["emails_enriched"] == 0,
            "reconcile_at_most_quarter_of_backfill_units": figures["reconcile_units_ratio_to_backfill"]
            <= 0.25,
            "reconcile_enriches_only_new_mail": reconcile["emails_enriched"] == RECONCILE_CHANGES["new"],
        }
    get_settings.cache_clear()
    return figures
