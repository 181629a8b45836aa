"""`process_email_batch`: the unit of work of a sync once its messages are downloaded.

parse → enrich (messages not enriched before) → store (document id = message id) → progress →
checkpoint (the plan's cursor + lease renewal) → counted in the run's summary. Redoing a batch is
harmless: the same documents are written again and already-enriched messages are skipped at download
time.
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from emailsync.sync.batch import Batch
from emailsync.sync.plan import SyncPlan
from emailsync.sync.run import SyncRun
from tasks.common import RETRY_POLICY


@task(name="process-email-batch", cache_policy=NO_CACHE, **RETRY_POLICY)
def process_email_batch(run: SyncRun, plan: SyncPlan, batch: Batch) -> None:
    """Store one fetched batch, checkpoint where the plan says, and count it in the run's summary."""
    session = run.session
    assert session is not None, "the run's session is made when `run.reported()` is entered"
    stored = session.store_batch(batch, run.parked(batch))
    run.record(stored, plan.checkpoint_after(stored))
