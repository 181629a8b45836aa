"""Peak RSS of a sync process (`python -m flows.email_sync`) for ~1k vs ~10k messages, and what it is made of.

The corpus is replicated with distinct Message-IDs and served with the quota lifted, by a local Gmail
server in its own process; the sync runs in a fresh subprocess against the real Firestore emulator and
a real Prefect API. Beside the two syncs, a fresh process that only imports the flow and loads the
enricher gives the fixed part (interpreter, Prefect, gRPC, ONNX Runtime and the model), so the rest of
the peak is the sync's working set: the batches in flight. Run with `python -m bench.run memory`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

from bench.bench_sync import (
    PROJECT,
    REPLICAS_LARGE,
    REPLICAS_SMALL,
    REPO_ROOT,
    UNLIMITED_QUOTA,
    _gmail_server_process,
    _sync_subprocess,
)

_LOADED_ONLY = """
import resource
import flows.email_sync
from emailsync.enrichment import get_enricher
get_enricher().embed_query("warm-up")
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def _loaded_only_rss_mb(environment: dict[str, str]) -> float:
    """Peak RSS of a process that imports the flow and loads the enricher, and syncs nothing."""
    completed = subprocess.run(
        [sys.executable, "-c", _LOADED_ONLY],
        cwd=REPO_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        check=True,
    )
    return round(int(completed.stdout.strip().splitlines()[-1]) / 1024, 1)  # Linux reports KiB


def run() -> dict[str, Any]:
    from bench.services import firestore_and_prefect

    figures: dict[str, Any] = {
        "cores": len(os.sched_getaffinity(0)),
        "load_average_at_start": [round(value, 2) for value in os.getloadavg()],
    }
    with firestore_and_prefect(PROJECT) as (_, client):
        figures |= _peak_rss_figures(client)
    figures["load_average_at_end"] = [round(value, 2) for value in os.getloadavg()]
    return figures


def _peak_rss_figures(client: Any) -> dict[str, Any]:
    """The loaded-only process and the two syncs, against the running emulator and Prefect API."""
    from prefect.settings import PREFECT_API_URL

    from emailsync.local.seed import seed_account

    figures: dict[str, Any] = {}
    prefect_api_url = PREFECT_API_URL.value()
    base = {**os.environ, "PREFECT_API_URL": prefect_api_url}
    figures["loaded_only_peak_rss_mb"] = _loaded_only_rss_mb(base)
    memory: dict[str, Any] = {}
    for label, replicas in (("small", REPLICAS_SMALL), ("large", REPLICAS_LARGE)):
        account = seed_account(
            client,
            provider_user_id=f"pu-rss-{label}",
            family_id=f"family-{label}",
            token=f"rss-{label}",
        )
        with _gmail_server_process("own", None, replicas) as url:
            child = {
                **base,
                "GMAIL_API_ENDPOINT": url,
                "EMAILSYNC_QUOTA_UNITS_PER_SECOND": str(UNLIMITED_QUOTA),
            }
            memory[label] = _sync_subprocess(account.provider_user_id, child)
        memory[label]["above_loaded_only_mb"] = round(
            memory[label]["peak_rss_mb"] - figures["loaded_only_peak_rss_mb"], 1
        )
    figures["memory"] = memory
    figures["peak_rss_large_over_small"] = round(
        memory["large"]["peak_rss_mb"] / memory["small"]["peak_rss_mb"], 3
    )
    figures["messages_large_over_small"] = round(memory["large"]["messages"] / memory["small"]["messages"], 2)
    return figures
