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
    lease_timeout_seconds: float = Field(300.0, validation_alias=_env("EMAILSYNC_LEASE_TIMEOUT_SECONDS"))
    prefect_api_url: str | None = Field(None, validation_alias=_env("PREFECT_API_URL"))
    local_backend: LocalBackend = Field(
        DEFAULT_LOCAL_BACKEND, validation_alias=_env("EMAILSYNC_LOCAL_BACKEND")
    )
    local_onnx_precision: OnnxPrecision = Field(
        DEFAULT_ONNX_PRECISION, validation_alias=_env("EMAILSYNC_ONNX_PRECISION")
    )
    # None = the CPUs this process may run on (its affinity)
    local_threads: int | None = Field(None, validation_alias=_env("EMAILSYNC_LOCAL_THREADS"))

    # EMAILSYNC_QUOTA_COST_<METHOD>: folded into `quota_costs` (unset: QuotaCosts' default).
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

    @model_validator(mode="after")
    def _fold_quota_costs(self) -> Settings:
        overrides = {
            method: getattr(self, f"quota_cost_{method}")
            for method in QuotaCosts.model_fields
            if getattr(self, f"quota_cost_{method}") is not None
        }
        if overrides:
            self.quota_costs = self.quota_costs.model_copy(update=overrides)
        return self

    @field_validator("local_backend", "local_onnx_precision", mode="before")
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
