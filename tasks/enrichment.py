"""Enrichment task: load the model while the first batch downloads, not after it."""

from __future__ import annotations

import time

from prefect import task
from prefect.cache_policies import NO_CACHE

from emailsync.enrichment import Enricher


@task(name="warm-up-enricher", cache_policy=NO_CACHE)
def warm_up_enricher(enricher: Enricher) -> float:
    """Seconds spent loading (the local model takes seconds; later calls are no-ops)."""
    started = time.perf_counter()
    enricher.embed_query("warm-up")
    return time.perf_counter() - started
