"""The Prefect deployments of emailsync, defined once: names, entrypoints, tags, parameters,
schedule and concurrency. `prefect.yaml` (production, `prefect deploy --all`) and `emailsync serve`
(`deployments/serve.py`) both follow this table; `tests/unit/test_deployment_specs.py` fails when
prefect.yaml drifts from it. Plain data: flows/ and deployments/ import it, it imports neither.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class DeploymentSpec:
    flow_name: str
    name: str
    entrypoint: str
    description: str
    tags: tuple[str, ...]
    parameters: dict[str, Any] = field(default_factory=dict)
    cron: str | None = None
    concurrency_limit: int | None = None
    version: str = "0.1.0"

    @property
    def full_name(self) -> str:
        """`flow/deployment`, as `run_deployment` and `prefect deployment run` take it."""
        return f"{self.flow_name}/{self.name}"


EMAIL_SYNC = DeploymentSpec(
    flow_name="email-sync",
    name="email-sync",
    entrypoint="flows/email_sync.py:email_sync",
    description=(
        "Sync one provider user's Gmail: backfill on first connect, incremental (history.list) "
        'afterwards. Started by the Gmail-connect watcher (trigger "connect"), by periodic-email-sync '
        '(trigger "schedule") or by `emailsync sync` (trigger "manual").'
    ),
    tags=("emailsync", "gmail"),
    # Only provider_user_id is required; the watcher passes trigger and sync_id (its pending doc).
    parameters={"trigger": "manual"},
)

PERIODIC_EMAIL_SYNC = DeploymentSpec(
    flow_name="periodic-email-sync",
    name="periodic-email-sync",
    entrypoint="flows/periodic_sync.py:periodic_email_sync",
    description=(
        "Hourly sweep: checks every provider user with Gmail active in-process (one history.list call "
        "each, no model load) and starts a run of email-sync/email-sync only for users with changes, an "
        "expired history, an unfinished backfill or a failed last sync. Shard the fleet across several "
        "deployments with shard_index / shard_count."
    ),
    tags=("emailsync", "schedule"),
    parameters={"shard_index": 0, "shard_count": 1, "deployment_name": EMAIL_SYNC.full_name},
    cron="0 * * * *",
    # One fan-out at a time: a slow hour must not stack a second fan-out on top of it.
    concurrency_limit=1,
)

RENEW_GMAIL_WATCHES = DeploymentSpec(
    flow_name="renew-gmail-watches",
    name="renew-gmail-watches",
    entrypoint="flows/renew_watches.py:renew_gmail_watches",
    description=(
        "Gmail push: renews every connected user's users.watch well before its 7-day expiry, re-creates "
        "lapsed watches and stops those of disconnected users. Does nothing without "
        "EMAILSYNC_GMAIL_PUSH_TOPIC."
    ),
    tags=("emailsync", "push"),
    cron="30 */6 * * *",
    concurrency_limit=1,
)

DEPLOYMENTS: tuple[DeploymentSpec, ...] = (EMAIL_SYNC, PERIODIC_EMAIL_SYNC, RENEW_GMAIL_WATCHES)

EMAIL_SYNC_DEPLOYMENT = EMAIL_SYNC.full_name
