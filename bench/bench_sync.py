"""End-to-end `email_sync` figures: real Firestore emulator, real local Gmail server, real Prefect API.

- quota: msg/s of a whole backfill at 250 units/s ÷ the ceiling (250 ÷ 5 units per messages.get =
  50 msg/s), on the full corpus (≥ 300 messages; the sample when the corpus is absent). Two datings
  of the same messages: "dense" (spread over the last four weeks, like an active inbox) and "corpus"
  (their own dates, 1998-2010: two dozen mostly tiny weeks separated by years, so each window costs
  probe + list calls that a dense inbox amortises).
- Prefect overhead: task-run time outside the domain calls ÷ sync wall time (= per batch ÷ batch time).
- the same (dense) at 100 units/s (ceiling 20 msg/s, which local enrichment keeps up with): how
  close the pipeline runs to the quota when the CPU is not the bottleneck.
- enrichment msg/s inside the flow (local MiniLM backend).
- quota off: msg/s of a whole backfill when the server enforces no quota (goal ≥ 100 msg/s).
- three users back-filling at once in one process (one worker, one enricher), each at 250 units/s:
  aggregate msg/s ÷ 150.
- peak RSS: bench/bench_memory.py.

- steady-state ratio: messages stored between the end of the first batch's fetch and the end of the last
  fetch ÷ that time ÷ the ceiling. The head (first fetch, nothing to process yet) and the tail (processing
  the last batch, nothing left to fetch) are fixed costs that vanish in mailboxes of thousands of messages;
  the whole-run ratio keeps them. Also a ~3,000-message dense run (the corpus replicated).

Topology: like production, where Gmail is remote, the local Gmail server runs in its own process (one per
run, so its stats start at zero; read over HTTP from its `GET /_stats` admin route), so serving HTTP does
not compete with the sync for this process's GIL. Ratios are measured within one run. Run with
`python -m bench.run sync`.
"""

from __future__ import annotations

import json
import mailbox as std_mailbox
import multiprocessing
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

REPO_ROOT = Path(__file__).resolve().parents[1]
# ../shared/corpus beside the checkout; EMAILSYNC_BENCH_CORPUS points elsewhere (e.g. from a worktree).
CORPUS_DIR = Path(os.environ.get("EMAILSYNC_BENCH_CORPUS") or REPO_ROOT.parent / "shared" / "corpus")
SAMPLE_MBOX = REPO_ROOT / "samples" / "sample.mbox"
PROJECT = "omnibutler-bench"
QUOTA_UNITS_PER_SECOND = 250.0
LOW_QUOTA_UNITS_PER_SECOND = 100.0  # ceiling 20 msg/s: below what local enrichment manages on 2 cores
UNLIMITED_QUOTA = 100_000.0
QUOTA_OFF_GOAL_MESSAGES_PER_SECOND = 100.0
CONCURRENT_USERS = 3
REPLICAS_SMALL = 1
REPLICAS_LARGE = 10
REPLICAS_STEADY = 3  # ~3,000 messages: head and tail weigh three times less than in the 1k run
SERVER_START_TIMEOUT_SECONDS = 60
Dating = Literal["dense", "corpus", "own"]  # last four weeks / own dates shifted to now / own dates as is
_MESSAGE_ID_HEADER = re.compile(rb"(?im)^(message-id:[ \t]*<?)")


def _raw_messages() -> tuple[str, list[bytes]]:
    paths = sorted(CORPUS_DIR.glob("*.mbox")) if CORPUS_DIR.is_dir() else []
    source = "corpus" if paths else "sample"
    raws: list[bytes] = []
    for path in paths or [SAMPLE_MBOX]:
        box = std_mailbox.mbox(str(path), create=False)
        try:
            raws += [box.get_bytes(key, from_=False) for key in box.iterkeys()]
        finally:
            box.close()
    return source, raws


def _replicated(raws: list[bytes], replicas: int) -> list[bytes]:
    """`replicas` copies of every message; copies after the first get a distinct Message-ID."""
    copies = list(raws)
    for replica in range(1, replicas):
        for raw in raws:
            renamed, count = _MESSAGE_ID_HEADER.subn(rb"\g<1>r%d." % replica, raw, count=1)
            copies.append(
                renamed if count else b"Message-ID: <r%d.%d@bench>\n" % (replica, len(copies)) + raw
            )
    return copies


def _dense_mailbox(raws: list[bytes]) -> Any:
    """The messages spread evenly over the last four weeks, newest now."""
    from emailsync.local.mailbox import Mailbox

    mailbox = Mailbox()
    now = datetime.now(UTC)
    step = timedelta(weeks=4) / max(len(raws), 1)
    for index, raw in enumerate(raws):
        mailbox.add_message(raw, internal_date_ms=int((now - index * step).timestamp() * 1000))
    return mailbox


def _serve_mailbox(
    dating: Dating, replicas: int, quota_units_per_second: float | None, urls: Any, stop: Any
) -> None:
    """Child process: build the mailbox here (no pickled mailbox), serve it until `stop` is set."""
    from emailsync.local.gmail_server.server import GmailApiServer
    from emailsync.local.mailbox import Mailbox

    raws = _replicated(_raw_messages()[1], replicas)
    if dating == "dense":
        mailbox = _dense_mailbox(raws)
    else:
        mailbox = Mailbox.from_raw_messages(raws, shift_dates=dating == "corpus")
    with GmailApiServer(mailbox, quota_units_per_second=quota_units_per_second) as server:
        urls.put(server.url)
        stop.wait()


@contextmanager
def _gmail_server_process(
    dating: Dating, quota_units_per_second: float | None, replicas: int = 1
) -> Iterator[str]:
    """A local Gmail server in its own process (every token sees its mailbox); yields its root URL."""
    context = multiprocessing.get_context("spawn")  # this process holds torch and gRPC threads: no fork
    urls, stop = context.Queue(), context.Event()
    process = context.Process(
        target=_serve_mailbox,
        args=(dating, replicas, quota_units_per_second, urls, stop),
        name=f"gmail-server-{dating}",
        daemon=True,
    )
    process.start()
    try:
        yield urls.get(timeout=SERVER_START_TIMEOUT_SECONDS)
    finally:
        stop.set()
        process.join(timeout=10)
        if process.is_alive():
            process.terminate()
            process.join()


def _server_stats(url: str) -> Any:
    import requests

    from emailsync.local.gmail_server.server import STATS_PATH, ServerStats

    response = requests.get(url.rstrip("/") + STATS_PATH, timeout=10)
    response.raise_for_status()
    return ServerStats.model_validate_json(response.content)


class _Timeline:
    """Measurement probe: when each backfill fetch ended and when each group of emails was stored.

    Wraps `SyncSession.fetch_backfill_batch` and `EmailRepository.upsert_many` for the duration of one
    run (restored after), so the domain code carries no bench-only bookkeeping.
    """

    def __init__(self) -> None:
        self.fetch_ends: list[float] = []
        self.stores: list[tuple[float, int]] = []  # (end time, emails written)
        self._lock = threading.Lock()

    @contextmanager
    def recording(self) -> Iterator[_Timeline]:
        from emailsync.firestore.emails import EmailRepository
        from emailsync.sync.pipeline import SyncSession

        original_fetch, original_upsert = SyncSession.fetch_backfill_batch, EmailRepository.upsert_many
        timeline = self

        def fetch_backfill_batch(session: Any, *args: Any, **kwargs: Any) -> Any:
            fetched = original_fetch(session, *args, **kwargs)
            with timeline._lock:
                timeline.fetch_ends.append(time.perf_counter())
            return fetched

        def upsert_many(repository: Any, *args: Any, **kwargs: Any) -> int:
            written = original_upsert(repository, *args, **kwargs)
            with timeline._lock:
                timeline.stores.append((time.perf_counter(), written))
            return written

        SyncSession.fetch_backfill_batch = fetch_backfill_batch  # type: ignore[method-assign]
        EmailRepository.upsert_many = upsert_many  # type: ignore[method-assign]
        try:
            yield self
        finally:
            SyncSession.fetch_backfill_batch = original_fetch  # type: ignore[method-assign]
            EmailRepository.upsert_many = original_upsert  # type: ignore[method-assign]

    def steady_state(self, ceiling_messages_per_second: float) -> dict[str, Any]:
        """Stored msg/s between the end of the first fetch and the end of the last one, ÷ the ceiling."""
        if len(self.fetch_ends) < 3:
            return {"steady_state_ratio_to_ceiling": None}
        start, end = self.fetch_ends[0], self.fetch_ends[-1]
        stored = sum(count for at, count in self.stores if start < at <= end)
        rate = stored / (end - start)
        return {
            "steady_state_seconds": round(end - start, 2),
            "steady_state_messages": stored,
            "steady_state_messages_per_second": round(rate, 2),
            "steady_state_ratio_to_ceiling": round(rate / ceiling_messages_per_second, 3),
        }


def _sync_in_process(
    provider_user_id: str, quota_units_per_second: float = QUOTA_UNITS_PER_SECOND
) -> dict[str, Any]:
    from flows.email_sync import email_sync

    timeline = _Timeline()
    started = time.perf_counter()
    with timeline.recording():
        summary = email_sync(provider_user_id, trigger="manual")
    finished = time.perf_counter()
    elapsed = finished - started
    timings = summary.timings
    stored = summary.emails_stored
    ceiling = quota_units_per_second / 5
    steady = timeline.steady_state(ceiling)
    if timeline.fetch_ends:
        # Fixed costs of a sync: nothing to process before the first fetch, nothing to fetch after the last.
        steady["head_seconds"] = round(timeline.fetch_ends[0] - started, 2)
        steady["tail_seconds"] = round(finished - timeline.fetch_ends[-1], 2)
    return {
        "messages": stored,
        "batches": summary.batches,
        "flow_call_seconds": round(elapsed, 2),
        "sync_wall_seconds": round(timings.wall_seconds, 2),
        "messages_per_second": round(stored / timings.wall_seconds, 2),
        "ratio_to_ceiling": round(stored / timings.wall_seconds / ceiling, 3),
        **steady,
        "fetch_seconds": round(timings.fetch_seconds, 2),
        "enrich_seconds": round(timings.enrich_seconds, 2),
        "store_seconds": round(timings.store_seconds, 2),
        "parse_seconds": round(timings.parse_seconds, 2),
        "enrichment_messages_per_second": round(
            summary.emails_enriched / max(timings.enrich_seconds, 1e-9), 1
        ),
        "prefect_overhead_seconds": round(timings.orchestration_seconds, 3),
        "prefect_overhead_per_batch_seconds": round(
            timings.orchestration_seconds / max(summary.batches, 1), 4
        ),
        "batch_seconds": round(timings.wall_seconds / max(summary.batches, 1), 3),
        "prefect_overhead_ratio": round(timings.orchestration_seconds / timings.wall_seconds, 4),
    }


def _quota_run(
    client: Any, label: str, dating: Dating, quota_units_per_second: float | None, replicas: int = 1
) -> dict[str, Any]:
    """One backfill for a fresh provider user against its own Gmail server process at the given quota
    (None: the server enforces none and the client paces at `UNLIMITED_QUOTA`), with the server's view
    of the quota spent."""
    from emailsync.config import get_settings
    from emailsync.local.seed import seed_account

    account = seed_account(
        client, provider_user_id=f"pu-{label}", family_id=f"family-{label}", token=f"{label}-t"
    )
    client_quota = quota_units_per_second or UNLIMITED_QUOTA
    with _gmail_server_process(dating, quota_units_per_second, replicas) as url:
        os.environ["GMAIL_API_ENDPOINT"] = url
        os.environ["EMAILSYNC_QUOTA_UNITS_PER_SECOND"] = str(client_quota)
        get_settings.cache_clear()
        load = os.getloadavg()[0]
        result = _sync_in_process(account.provider_user_id, client_quota)
        stats = _server_stats(url)
    result["load_average_1min_before"] = round(load, 2)  # other work on the machine skews the figures
    result["quota_units_per_second"] = quota_units_per_second
    result["server_calls"] = dict(stats.requests_by_method)
    result["server_429"] = stats.rate_limited
    result["quota_units_spent"] = stats.quota_units
    result["units_on_messages_get"] = stats.requests_by_method.get("messages.get", 0) * 5
    # Share of the quota that went into downloading messages (the rest: list, window probes, profile).
    result["quota_share_on_messages_get"] = round(result["units_on_messages_get"] / stats.quota_units, 3)
    # The stage that sets the pace: downloads (quota) or parse + enrich (CPU; the writes overlap enrichment).
    cpu_seconds = result["parse_seconds"] + result["enrich_seconds"]
    result["bottleneck"] = "quota" if result["fetch_seconds"] >= cpu_seconds else "enrichment (CPU)"
    return result


def _concurrent_run(client: Any, users: int, quota_units_per_second: float) -> dict[str, Any]:
    """`users` backfills at once in this process (one worker, one shared enricher), each its own token
    and so its own quota at the server; aggregate msg/s ÷ the sum of their ceilings."""
    from concurrent.futures import ThreadPoolExecutor

    from emailsync.config import get_settings
    from emailsync.local.seed import seed_account
    from flows.email_sync import email_sync

    accounts = [
        seed_account(
            client, provider_user_id=f"pu-multi-{n}", family_id=f"family-multi-{n}", token=f"multi-{n}-t"
        )
        for n in range(users)
    ]
    with _gmail_server_process("dense", quota_units_per_second) as url:
        os.environ["GMAIL_API_ENDPOINT"] = url
        os.environ["EMAILSYNC_QUOTA_UNITS_PER_SECOND"] = str(quota_units_per_second)
        get_settings.cache_clear()
        load = os.getloadavg()[0]
        started = time.perf_counter()
        with ThreadPoolExecutor(users) as pool:
            summaries = list(
                pool.map(lambda account: email_sync(account.provider_user_id, trigger="manual"), accounts)
            )
        elapsed = time.perf_counter() - started
        stats = _server_stats(url)
    stored = sum(summary.emails_stored for summary in summaries)
    ceiling = users * quota_units_per_second / 5
    return {
        "users": users,
        "load_average_1min_before": round(load, 2),
        "quota_units_per_second_per_user": quota_units_per_second,
        "messages": stored,
        "seconds": round(elapsed, 2),
        "aggregate_messages_per_second": round(stored / elapsed, 2),
        "ceiling_messages_per_second": ceiling,
        "aggregate_ratio_to_ceiling": round(stored / elapsed / ceiling, 3),
        "per_user_messages_per_second": [
            round(summary.emails_stored / summary.timings.wall_seconds, 2) for summary in summaries
        ],
        "enrich_seconds_per_user": [round(summary.timings.enrich_seconds, 2) for summary in summaries],
        "server_429": stats.rate_limited,
    }


def _sync_subprocess(provider_user_id: str, environment: dict[str, str]) -> dict[str, Any]:
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "flows.email_sync", provider_user_id],
        cwd=REPO_ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert process.stdout is not None
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"sync subprocess exited {process.returncode}")
    summary = json.loads(output.decode().strip().splitlines()[-1])
    return {
        "messages": summary["emails_stored"],
        "seconds": round(time.perf_counter() - started, 1),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),  # Linux reports KiB
    }


def run() -> dict[str, Any]:
    from bench.services import firestore_and_prefect
    from emailsync.enrichment import get_enricher

    source = "corpus" if CORPUS_DIR.is_dir() and any(CORPUS_DIR.glob("*.mbox")) else "sample"
    figures: dict[str, Any] = {
        "source": source,
        "quota_units_per_second": QUOTA_UNITS_PER_SECOND,
        # The machine is shared: absolute msg/s move with its load, ratios within one run much less.
        "cores": len(os.sched_getaffinity(0)),
        "load_average_at_start": [round(value, 2) for value in os.getloadavg()],
    }
    with firestore_and_prefect(PROJECT) as (_, client):
        # A worker keeps the model loaded between syncs; load it before the clock starts.
        load_started = time.perf_counter()
        get_enricher().embed_query("warm-up")
        figures["model_load_seconds"] = round(time.perf_counter() - load_started, 1)

        # No quota at all: how fast this process stores a backfill when only its own CPU limits it.
        off = _quota_run(client, "off", "dense", None)
        figures["quota_off"] = off
        figures["quota_off_messages_per_second"] = off["messages_per_second"]
        figures["quota_off_ratio_to_goal"] = round(
            off["messages_per_second"] / QUOTA_OFF_GOAL_MESSAGES_PER_SECOND, 3
        )
        figures["concurrent_users"] = _concurrent_run(client, CONCURRENT_USERS, QUOTA_UNITS_PER_SECOND)
        figures["concurrent_users_ratio_to_ceiling"] = figures["concurrent_users"][
            "aggregate_ratio_to_ceiling"
        ]

        for dating in ("dense", "corpus"):
            figures[f"quota_{dating}"] = _quota_run(client, dating, dating, QUOTA_UNITS_PER_SECOND)
        figures["quota_dense_3k"] = _quota_run(
            client, "dense-3k", "dense", QUOTA_UNITS_PER_SECOND, replicas=REPLICAS_STEADY
        )

        # The same pipeline at a quota the CPU can keep up with: how close downloads run to the quota
        # when enrichment is not the bottleneck (same messages, dense dating).
        low = _quota_run(client, "low", "dense", LOW_QUOTA_UNITS_PER_SECOND)
        figures["quota_low"] = low
        figures["ratio_to_ceiling_when_quota_bound"] = low["ratio_to_ceiling"]

        dense = figures["quota_dense"]
        figures["end_to_end_ratio_to_ceiling"] = dense["ratio_to_ceiling"]
        figures["steady_state_ratio_to_ceiling"] = dense["steady_state_ratio_to_ceiling"]
        figures["end_to_end_ratio_to_ceiling_3k"] = figures["quota_dense_3k"]["ratio_to_ceiling"]
        figures["steady_state_ratio_to_ceiling_3k"] = figures["quota_dense_3k"][
            "steady_state_ratio_to_ceiling"
        ]
        figures["prefect_overhead_ratio"] = dense["prefect_overhead_ratio"]
        figures["enrichment_messages_per_second_in_flow"] = dense["enrichment_messages_per_second"]
    figures["load_average_at_end"] = [round(value, 2) for value in os.getloadavg()]
    figures["goals"] = {
        "quota_off_messages_per_second": f">= {QUOTA_OFF_GOAL_MESSAGES_PER_SECOND:g}",
        "concurrent_users_ratio_to_ceiling": f"report ({CONCURRENT_USERS} users at 50 msg/s each)",
        "end_to_end_ratio_to_ceiling": ">= 0.95",
        "steady_state_ratio_to_ceiling": ">= 0.95",
        "prefect_overhead_ratio": "<= 0.05",
    }
    return figures


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
