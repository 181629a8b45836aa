"""Fetch throughput of the Gmail client against the quota ceiling of the local Gmail server.

Paced run: server with the per-user quota (250 units/s, messages.get = 5 units → ceiling 50 msg/s); the
client lists every id, then fetches them page by page (100 ids per call, as the sync does). Figures:
messages/s, its ratio to the ceiling, and the share of calls the server answered 429.
Raw run: same mailbox, quota disabled on both sides, to show the server is not the bottleneck.
Uses the full corpus when present (≥ 1000 messages), else samples/sample.mbox.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from emailsync.config import QuotaCosts, Settings
from emailsync.gmail.client import GmailClient
from emailsync.local.gmail_server.server import GmailApiServer
from emailsync.local.mailbox import Mailbox, read_mbox
from emailsync.models import ProviderCredentials

REPO_ROOT = Path(__file__).resolve().parents[1]
CORPUS_DIR = REPO_ROOT.parent / "shared" / "corpus"
SAMPLE_MBOX = REPO_ROOT / "samples" / "sample.mbox"
QUOTA_UNITS_PER_SECOND = 250.0
PAGE_SIZE = 100


def _load_raws() -> tuple[str, list[bytes]]:
    paths = sorted(CORPUS_DIR.glob("*.mbox")) if CORPUS_DIR.is_dir() else []
    source = "corpus" if paths else "sample"
    raws: list[bytes] = []
    for path in paths or [SAMPLE_MBOX]:
        raws.extend(read_mbox(path))
    return source, raws


def _fetch_run(mailbox: Mailbox, *, quota: float | None, token: str) -> dict[str, Any]:
    costs = QuotaCosts()
    with GmailApiServer(mailbox.copy(), quota_units_per_second=quota or 0, costs=costs) as server:
        settings = Settings(gmail_api_endpoint=server.url, quota_units_per_second=quota or 1e9)
        client = GmailClient(ProviderCredentials(token=token), settings)
        ids = client.list_all_message_ids()
        server.reset_stats()
        started = time.perf_counter()
        fetched = 0
        for start in range(0, len(ids), PAGE_SIZE):
            fetched += len(client.get_messages(ids[start : start + PAGE_SIZE]))
        seconds = time.perf_counter() - started
        stats = server.stats
    calls = sum(stats.responses_by_status.values())
    return {
        "messages": fetched,
        "listed": len(ids),
        "seconds": round(seconds, 3),
        "messages_per_second": round(fetched / seconds, 2),
        "server_calls": calls,
        "server_429": stats.rate_limited,
        "percent_429": round(100 * stats.rate_limited / calls, 3) if calls else 0.0,
        "batch_requests": stats.batch_requests,
        "client_paced_seconds": round(client.stats.paced_seconds, 2),
        "client_backoff_seconds": round(client.stats.backoff_seconds, 2),
        "final_batch_size": client.batch_size,
    }


def run() -> dict[str, Any]:
    source, raws = _load_raws()
    mailbox = Mailbox.from_raw_messages(raws)
    ceiling = QUOTA_UNITS_PER_SECOND / QuotaCosts().messages_get
    paced = _fetch_run(mailbox, quota=QUOTA_UNITS_PER_SECOND, token="bench-fetch-paced")
    raw = _fetch_run(mailbox, quota=None, token="bench-fetch-raw")
    return {
        "source": source,
        "messages": len(raws),
        "quota_units_per_second": QUOTA_UNITS_PER_SECOND,
        "ceiling_messages_per_second": ceiling,
        "paced": paced,
        "paced_ratio_to_ceiling": round(paced["messages_per_second"] / ceiling, 3),
        "paced_percent_429": paced["percent_429"],
        "unthrottled": raw,
        "unthrottled_ratio_to_ceiling": round(raw["messages_per_second"] / ceiling, 2),
        "goal": "paced_ratio_to_ceiling >= 0.95 with paced_percent_429 <= 1",
        "goal_met": paced["messages_per_second"] / ceiling >= 0.95 and paced["percent_429"] <= 1.0,
    }
