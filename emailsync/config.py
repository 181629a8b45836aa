"""Runtime configuration, read once from the environment (see DESIGN.md, "Environment")."""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Literal

from pydantic import BaseModel, Field

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


class QuotaCosts(BaseModel):
    """Gmail quota units per method. Google projects differ, so every cost is configurable."""

    messages_get: int = 5
    messages_list: int = 5
    history_list: int = 2
    get_profile: int = 1


class Settings(BaseModel):
    """All knobs of emailsync. Field defaults are the production defaults."""

    google_cloud_project: str = "omnibutler-local"
    firestore_emulator_host: str | None = None
    gmail_api_endpoint: str | None = None  # root URL of a Gmail-compatible server; None = Google
    openai_api_key: str | None = Field(default=None, repr=False)
    openai_base_url: str | None = None
    openai_chat_model: str = "gpt-4o-mini"
    openai_embedding_model: str = "text-embedding-3-small"
    embedding_dimensions: int = 384
    batch_size: int = 100
    lookback_weeks: int | None = None
    quota_units_per_second: float = 250.0
    quota_costs: QuotaCosts = QuotaCosts()
    lease_timeout_seconds: float = 300.0
    prefect_api_url: str | None = None
    local_backend: LocalBackend = DEFAULT_LOCAL_BACKEND
    local_onnx_precision: Literal["fp32", "int8"] = "fp32"
    local_threads: int | None = None  # None = the CPUs this process may run on (its affinity)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)

        def opt(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        costs = QuotaCosts(
            messages_get=int(opt("EMAILSYNC_QUOTA_COST_MESSAGES_GET") or 5),
            messages_list=int(opt("EMAILSYNC_QUOTA_COST_MESSAGES_LIST") or 5),
            history_list=int(opt("EMAILSYNC_QUOTA_COST_HISTORY_LIST") or 2),
            get_profile=int(opt("EMAILSYNC_QUOTA_COST_GET_PROFILE") or 1),
        )
        lookback = opt("EMAILSYNC_LOOKBACK_WEEKS")
        threads = opt("EMAILSYNC_LOCAL_THREADS")
        return cls(
            google_cloud_project=opt("GOOGLE_CLOUD_PROJECT") or opt("GCLOUD_PROJECT") or "omnibutler-local",
            firestore_emulator_host=opt("FIRESTORE_EMULATOR_HOST"),
            gmail_api_endpoint=opt("GMAIL_API_ENDPOINT"),
            openai_api_key=opt("OPENAI_API_KEY"),
            openai_base_url=opt("OPENAI_BASE_URL"),
            openai_chat_model=opt("EMAILSYNC_OPENAI_CHAT_MODEL") or "gpt-4o-mini",
            openai_embedding_model=opt("EMAILSYNC_OPENAI_EMBEDDING_MODEL") or "text-embedding-3-small",
            batch_size=int(opt("EMAILSYNC_BATCH_SIZE") or 100),
            lookback_weeks=int(lookback) if lookback else None,
            quota_units_per_second=float(opt("EMAILSYNC_QUOTA_UNITS_PER_SECOND") or 250),
            quota_costs=costs,
            lease_timeout_seconds=float(opt("EMAILSYNC_LEASE_TIMEOUT_SECONDS") or 300),
            prefect_api_url=opt("PREFECT_API_URL"),
            local_backend=(opt("EMAILSYNC_LOCAL_BACKEND") or DEFAULT_LOCAL_BACKEND).lower(),
            local_onnx_precision=(opt("EMAILSYNC_ONNX_PRECISION") or "fp32").lower(),
            local_threads=int(threads) if threads else None,
        )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings. Tests that change the environment call `get_settings.cache_clear()`."""
    return Settings.from_env()
