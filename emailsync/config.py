"""Runtime configuration, read once from the environment (see DESIGN.md, "Environment")."""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Literal

from pydantic import AliasChoices, BaseModel, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Prefect (server and client) runs offline: no telemetry, no update checks. The Makefile exports these
# too; entry points set them unless already set, and child Prefect processes get them explicitly.
PREFECT_OFFLINE_ENVIRONMENT: dict[str, str] = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
}


def use_offline_prefect_defaults() -> None:
    """Set `PREFECT_OFFLINE_ENVIRONMENT` in this process, except where the environment already says."""
    for name, value in PREFECT_OFFLINE_ENVIRONMENT.items():
        os.environ.setdefault(name, value)


LocalBackend = Literal["onnx", "torch"]
# The offline embedding runtime when EMAILSYNC_LOCAL_BACKEND is unset.
DEFAULT_LOCAL_BACKEND: LocalBackend = "onnx"
OnnxPrecision = Literal["int8mix", "fp32", "int8"]
# The ONNX graph when EMAILSYNC_ONNX_PRECISION is unset: int8 except the most sensitive fp32 layers
# (emailsync/enrichment/onnx_export.py), the one measured both fast and within the cosine goals.
DEFAULT_ONNX_PRECISION: OnnxPrecision = "int8mix"


class QuotaCosts(BaseModel):
    """Gmail quota units per method. Google projects differ, so every cost is configurable."""

    messages_get: int = 5
    messages_list: int = 5
    history_list: int = 2
    get_profile: int = 1
    messages_insert: int = 25
    messages_modify: int = 5
    messages_trash: int = 5
    messages_untrash: int = 5
    messages_delete: int = 10
    messages_batch_modify: int = 50
    messages_batch_delete: int = 50
    labels_list: int = 1
    labels_get: int = 1
    labels_create: int = 5
    watch: int = 100
    stop: int = 50


def _env(*names: str) -> AliasChoices:
    """The environment variable(s) a setting is read from (the first one set wins)."""
    return AliasChoices(*names)


class Settings(BaseSettings):
    """All knobs of emailsync, each default written once, here (QuotaCosts: the per-method costs).

    `Settings.from_env()` / `get_settings()` read the environment (empty values count as unset);
    `Settings(field=...)` also reads it, the keyword arguments winning.
    """

    model_config = SettingsConfigDict(
        env_ignore_empty=True, populate_by_name=True, extra="ignore", str_strip_whitespace=True
    )

    google_cloud_project: str = Field(
        "omnibutler-local",
        validation_alias=_env("GOOGLE_CLOUD_PROJECT", "GCLOUD_PROJECT"),
    )
    firestore_emulator_host: str | None = Field(None, validation_alias=_env("FIRESTORE_EMULATOR_HOST"))
    # root URL of a Gmail-compatible server; None = Google
    gmail_api_endpoint: str | None = Field(None, validation_alias=_env("GMAIL_API_ENDPOINT"))
    openai_api_key: str | None = Field(None, repr=False, validation_alias=_env("OPENAI_API_KEY"))
    openai_base_url: str | None = Field(None, validation_alias=_env("OPENAI_BASE_URL"))
    openai_chat_model: str = Field("gpt-4o-mini", validation_alias=_env("EMAILSYNC_OPENAI_CHAT_MODEL"))
    openai_embedding_model: str = Field(
        "text-embedding-3-small",
        validation_alias=_env("EMAILSYNC_OPENAI_EMBEDDING_MODEL"),
    )
    embedding_dimensions: int = 384
    batch_size: int = Field(100, validation_alias=_env("EMAILSYNC_BATCH_SIZE"))
    lookback_weeks: int | None = Field(None, validation_alias=_env("EMAILSYNC_LOOKBACK_WEEKS"))
    quota_units_per_second: float = Field(250.0, validation_alias=_env("EMAILSYNC_QUOTA_UNITS_PER_SECOND"))
    quota_costs: QuotaCosts = Field(default_factory=QuotaCosts)
    # A live sync renews its lease every `lease_renew_seconds` (a heartbeat thread, whatever the batches
    # do); a sync silent for `lease_timeout_seconds` is presumed dead and the next one takes over.
    lease_timeout_seconds: float = Field(30.0, gt=0, validation_alias=_env("EMAILSYNC_LEASE_TIMEOUT_SECONDS"))
    lease_renew_seconds: float = Field(10.0, gt=0, validation_alias=_env("EMAILSYNC_LEASE_RENEW_SECONDS"))
    # How long a check that Firestore or Gmail answers at all may take before the sync fails.
    connect_timeout_seconds: float = Field(
        5.0, gt=0, validation_alias=_env("EMAILSYNC_CONNECT_TIMEOUT_SECONDS")
    )
    # Where the CLI keeps machine-wide state (the shared local Prefect server); None = ~/.cache/emailsync.
    state_dir: str | None = Field(None, validation_alias=_env("EMAILSYNC_STATE_DIR"))
    # The CLI's shared local Prefect server stops after this long without a client.
    prefect_server_idle_minutes: float = Field(
        10.0, gt=0, validation_alias=_env("EMAILSYNC_PREFECT_SERVER_IDLE_MINUTES")
    )
    # syncProgress retention (the `expireAt` of Firestore's TTL policy): completed and skipped documents,
    # then failed (and never finished) ones, kept longer for whoever looks into the failure.
    progress_retention_days: float = Field(30.0, validation_alias=_env("EMAILSYNC_PROGRESS_RETENTION_DAYS"))
    failed_progress_retention_days: float = Field(
        90.0, validation_alias=_env("EMAILSYNC_FAILED_PROGRESS_RETENTION_DAYS")
    )
    # A pending document whose flow run has not started within this becomes failed (the watcher sweeps).
    pending_start_timeout_seconds: float = Field(
        900.0, validation_alias=_env("EMAILSYNC_PENDING_START_TIMEOUT_SECONDS")
    )
    # Where the Prefect automation on failed / crashed email-sync runs posts (unset: it only records
    # the event in Prefect; see deployments/automations.py).
    alert_webhook_url: str | None = Field(None, validation_alias=_env("EMAILSYNC_ALERT_WEBHOOK_URL"))
    # What a Gmail disconnect does to the user's data: keep it, or purge emails, sync state, credentials.
    on_disconnect: Literal["keep", "purge"] = Field("keep", validation_alias=_env("EMAILSYNC_ON_DISCONNECT"))
    prefect_api_url: str | None = Field(None, validation_alias=_env("PREFECT_API_URL"))
    local_backend: LocalBackend = Field(
        DEFAULT_LOCAL_BACKEND, validation_alias=_env("EMAILSYNC_LOCAL_BACKEND")
    )
    local_onnx_precision: OnnxPrecision = Field(
        DEFAULT_ONNX_PRECISION, validation_alias=_env("EMAILSYNC_ONNX_PRECISION")
    )
    # What a message that leaves the mailbox (trash, spam, delete) leaves behind: nothing, or a tombstone
    # (its document with `deletedAt` set, out of search and of the mirror's comparisons).
    deleted_mail: Literal["remove", "keep"] = Field("remove", validation_alias=_env("EMAILSYNC_DELETED_MAIL"))
    # None = the CPUs this process may run on (its affinity)
    local_threads: int | None = Field(None, validation_alias=_env("EMAILSYNC_LOCAL_THREADS"))
    # The periodic sweep: how many users it checks at once (one history.list each).
    sweep_concurrency: int = Field(16, validation_alias=_env("EMAILSYNC_SWEEP_CONCURRENCY"))
    # Gmail push: `projects/P/topics/T` (None = no push, polling only) and its subscription
    # (`projects/P/subscriptions/S`; None = `emailsync-gmail-push` in the topic's project).
    gmail_push_topic: str | None = Field(None, validation_alias=_env("EMAILSYNC_GMAIL_PUSH_TOPIC"))
    gmail_push_subscription: str | None = Field(
        None, validation_alias=_env("EMAILSYNC_GMAIL_PUSH_SUBSCRIPTION")
    )
    # A watch is renewed once it expires within this many seconds (Gmail's watches last 7 days).
    gmail_watch_renew_before_seconds: float = Field(
        2 * 86_400.0, validation_alias=_env("EMAILSYNC_GMAIL_WATCH_RENEW_BEFORE_SECONDS")
    )

    # EMAILSYNC_QUOTA_COST_<METHOD>: folded into `quota_costs` (unset: QuotaCosts' default). Only the
    # methods the sync calls have one; the others' costs matter to the local Gmail server alone.
    quota_cost_messages_get: int | None = Field(
        None, exclude=True, repr=False, validation_alias=_env("EMAILSYNC_QUOTA_COST_MESSAGES_GET")
    )
    quota_cost_messages_list: int | None = Field(
        None, exclude=True, repr=False, validation_alias=_env("EMAILSYNC_QUOTA_COST_MESSAGES_LIST")
    )
    quota_cost_history_list: int | None = Field(
        None, exclude=True, repr=False, validation_alias=_env("EMAILSYNC_QUOTA_COST_HISTORY_LIST")
    )
    quota_cost_get_profile: int | None = Field(
        None, exclude=True, repr=False, validation_alias=_env("EMAILSYNC_QUOTA_COST_GET_PROFILE")
    )
    quota_cost_watch: int | None = Field(
        None, exclude=True, repr=False, validation_alias=_env("EMAILSYNC_QUOTA_COST_WATCH")
    )
    quota_cost_stop: int | None = Field(
        None, exclude=True, repr=False, validation_alias=_env("EMAILSYNC_QUOTA_COST_STOP")
    )
    quota_cost_labels_list: int | None = Field(
        None, exclude=True, repr=False, validation_alias=_env("EMAILSYNC_QUOTA_COST_LABELS_LIST")
    )

    @model_validator(mode="after")
    def _fold_quota_costs(self) -> Settings:
        overrides = {
            method: getattr(self, f"quota_cost_{method}")
            for method in QuotaCosts.model_fields
            if getattr(self, f"quota_cost_{method}", None) is not None
        }
        if overrides:
            self.quota_costs = self.quota_costs.model_copy(update=overrides)
        return self

    @property
    def lease_heartbeat_seconds(self) -> float:
        """How often a live sync renews its lease: at least three renewals fit in one timeout."""
        return min(self.lease_renew_seconds, self.lease_timeout_seconds / 3)

    @field_validator("local_backend", "local_onnx_precision", "on_disconnect", "deleted_mail", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        """The settings of `env` (default: this process's environment)."""
        if env is None:
            return cls()
        return cls.model_validate({name: value for name, value in env.items() if value.strip()})


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings. Tests that change the environment call `get_settings.cache_clear()`."""
    return Settings.from_env()
