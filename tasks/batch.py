"""`process_email_batch`: the unit of work of a sync once its messages are downloaded.

parse → enrich (messages not enriched before) → store (document id = message id) → progress →
checkpoint (backfill cursor + lease renewal). Redoing a batch is harmless: the same documents are
written again and already-enriched messages are skipped at download time.
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from emailsync.sync.pipeline import BatchOutcome, ProgressPoint
from tasks.common import RETRY_POLICY, FetchedBatchRef, SyncResources


@task(name="process-email-batch", cache_policy=NO_CACHE, **RETRY_POLICY)
def process_email_batch(
    resources: SyncResources, batch: FetchedBatchRef, before: ProgressPoint, *, checkpoint: bool
) -> BatchOutcome:
    """Store one fetched batch; with `checkpoint` (backfill), save the cursor that follows it."""
    session = resources.session
    outcome = session.store_batch(resources.parked(batch), before)
    session.finish_batch(outcome, batch.cursor_after if checkpoint else None)
    resources.release(batch)
    return outcome
