"""The Prefect artifacts of a sync, kept in step with its `syncProgress` document: a progress bar while
it runs, then, when it ends (completed or failed), a table of what it did: outcome, counts, Gmail retries
and 429s, skipped and failed messages, tag distribution."""

from __future__ import annotations

import json
import logging
import re
from uuid import UUID

import pandas as pd
from prefect.artifacts import create_progress_artifact, create_table_artifact, update_progress_artifact

from emailsync.sync.summary import SyncSummary

logger = logging.getLogger(__name__)

_NOT_IN_ARTIFACT_KEYS = re.compile(r"[^a-z0-9-]+")


def artifact_key(provider_user_id: str, suffix: str = "") -> str:
    """Prefect artifact keys allow lowercase letters, numbers and dashes only."""
    slug = _NOT_IN_ARTIFACT_KEYS.sub("-", provider_user_id.lower()).strip("-") or "user"
    return f"email-sync-{slug}{suffix}"


class ProgressArtifacts:
    """The Prefect view of one sync's progress. Artifacts are a convenience: failures only log."""

    def __init__(self, provider_user_id: str, sync_id: str) -> None:
        self.provider_user_id = provider_user_id
        self.sync_id = sync_id
        self._progress_id: UUID | None = None
        self._shown = -1

    def start(self) -> None:
        try:
            self._progress_id = create_progress_artifact(
                progress=0.0,
                key=artifact_key(self.provider_user_id),
                description=f"Gmail sync {self.sync_id}",
            )
            self._shown = 0
        except Exception as exc:
            logger.warning("could not create the progress artifact of sync %s: %s", self.sync_id, exc)

    def show(self, percent: int) -> None:
        if self._progress_id is None or percent <= self._shown:
            return  # one API call per visible change, not per batch
        try:
            update_progress_artifact(self._progress_id, float(percent))
            self._shown = percent
        except Exception as exc:
            logger.warning("could not update the progress artifact of sync %s: %s", self.sync_id, exc)

    def finish(self, summary: SyncSummary) -> None:
        if summary.error is None:
            self.show(100)
        outcome = f"failed: {summary.error}" if summary.error else "completed"
        mode = summary.mode.value if summary.mode else "mode not chosen"
        try:
            create_table_artifact(
                table=summary_table(summary),
                key=artifact_key(self.provider_user_id, "-summary"),
                description=f"Gmail sync {self.sync_id} ({summary.trigger.value}, {mode}, "
                f"attempt {summary.attempt}) {outcome}",
            )
        except Exception as exc:
            logger.warning("could not create the summary artifact of sync %s: %s", self.sync_id, exc)


def summary_table(summary: SyncSummary) -> list[dict[str, object]]:
    """Counts first, then the tag distribution: one row per figure."""
    rows: list[dict[str, object]] = [
        {"figure": "outcome", "value": f"failed: {summary.error}" if summary.error else "completed"},
        {"figure": "attempt (runs of this sync)", "value": summary.attempt},
        {"figure": "emails processed", "value": summary.emails_processed},
        {"figure": "emails fetched", "value": summary.emails_fetched},
        {"figure": "emails stored", "value": summary.emails_stored},
        {"figure": "emails enriched", "value": summary.emails_enriched},
        {"figure": "skipped: already stored", "value": summary.emails_skipped},
        {"figure": "failed: vanished before download (404)", "value": summary.emails_vanished},
        {"figure": "stored with parse errors", "value": summary.parse_errors},
        {"figure": "batches", "value": summary.batches},
        {"figure": "Gmail API calls", "value": summary.gmail_calls},
        {"figure": "Gmail retries", "value": summary.gmail_retries},
        {"figure": "Gmail 429 answers", "value": summary.gmail_rate_limited},
        {"figure": "Gmail 5xx / transport errors", "value": summary.gmail_server_errors},
    ]
    rows += [{"figure": f"tag: {tag}", "value": count} for tag, count in summary.tag_counts.items()]
    frame = pd.DataFrame(rows, columns=["figure", "value"])
    # Through JSON: numpy integers are not JSON serialisable, and Prefect stores the table as JSON.
    return json.loads(frame.to_json(orient="records"))
