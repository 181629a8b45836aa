"""The Prefect artifacts of a sync, kept in step with its `syncProgress` document: a progress bar while
it runs, then a table of what was stored (counts and tag distribution)."""

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
        self.show(100)
        try:
            create_table_artifact(
                table=summary_table(summary),
                key=artifact_key(self.provider_user_id, "-summary"),
                description=f"What Gmail sync {self.sync_id} ({summary.mode}) stored",
            )
        except Exception as exc:
            logger.warning("could not create the summary artifact of sync %s: %s", self.sync_id, exc)


def summary_table(summary: SyncSummary) -> list[dict[str, object]]:
    """Counts first, then the tag distribution: one row per figure."""
    rows = [
        {"figure": "emails processed", "value": summary.emails_processed},
        {"figure": "emails fetched", "value": summary.emails_fetched},
        {"figure": "emails stored", "value": summary.emails_stored},
        {"figure": "emails enriched", "value": summary.emails_enriched},
        {"figure": "parse errors", "value": summary.parse_errors},
        {"figure": "batches", "value": summary.batches},
    ]
    rows += [{"figure": f"tag: {tag}", "value": count} for tag, count in summary.tag_counts.items()]
    frame = pd.DataFrame(rows, columns=["figure", "value"])
    # Through JSON: numpy integers are not JSON serialisable, and Prefect stores the table as JSON.
    return json.loads(frame.to_json(orient="records"))
