"""Settings: every default written once, read from the environment variables of DESIGN.md."""

from __future__ import annotations

import pytest

from emailsync.config import QuotaCosts, Settings

ENV_NAMES = [
    "GOOGLE_CLOUD_PROJECT",
    "GCLOUD_PROJECT",
    "FIRESTORE_EMULATOR_HOST",
    "GMAIL_API_ENDPOINT",
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "EMAILSYNC_OPENAI_CHAT_MODEL",
    "EMAILSYNC_OPENAI_EMBEDDING_MODEL",
    "EMAILSYNC_BATCH_SIZE",
    "EMAILSYNC_LOOKBACK_WEEKS",
    "EMAILSYNC_QUOTA_UNITS_PER_SECOND",
    "EMAILSYNC_QUOTA_COST_MESSAGES_GET",
    "EMAILSYNC_QUOTA_COST_MESSAGES_LIST",
    "EMAILSYNC_QUOTA_COST_HISTORY_LIST",
    "EMAILSYNC_QUOTA_COST_GET_PROFILE",
    "EMAILSYNC_LEASE_TIMEOUT_SECONDS",
    "PREFECT_API_URL",
]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_defaults_without_environment(clean_env):
    settings = Settings.from_env()
    assert settings.google_cloud_project == "omnibutler-local"
    assert (settings.batch_size, settings.lookback_weeks, settings.quota_units_per_second) == (
        100,
        None,
        250.0,
    )
    assert settings.lease_timeout_seconds == 30.0 and settings.lease_heartbeat_seconds == 10.0
    assert settings.quota_costs == QuotaCosts()
    assert settings.gmail_api_endpoint is None and settings.openai_api_key is None


def test_every_variable_keeps_its_name(clean_env):
    values = {
        "GCLOUD_PROJECT": "p",
        "FIRESTORE_EMULATOR_HOST": "127.0.0.1:8080",
        "GMAIL_API_ENDPOINT": "http://gmail/",
        "OPENAI_API_KEY": "sk-test",
        "OPENAI_BASE_URL": "http://openai/",
        "EMAILSYNC_OPENAI_CHAT_MODEL": "chat",
        "EMAILSYNC_OPENAI_EMBEDDING_MODEL": "embed",
        "EMAILSYNC_BATCH_SIZE": "10",
        "EMAILSYNC_LOOKBACK_WEEKS": "4",
        "EMAILSYNC_QUOTA_UNITS_PER_SECOND": "100",
        "EMAILSYNC_QUOTA_COST_MESSAGES_GET": "20",
        "EMAILSYNC_QUOTA_COST_HISTORY_LIST": "3",
        "EMAILSYNC_LEASE_TIMEOUT_SECONDS": "3",
        "PREFECT_API_URL": "http://prefect/api",
    }
    for name, value in values.items():
        clean_env.setenv(name, value)
    settings = Settings.from_env()
    assert settings.google_cloud_project == "p" and settings.firestore_emulator_host == "127.0.0.1:8080"
    assert (settings.gmail_api_endpoint, settings.openai_api_key, settings.openai_base_url) == (
        "http://gmail/",
        "sk-test",
        "http://openai/",
    )
    assert (settings.openai_chat_model, settings.openai_embedding_model) == ("chat", "embed")
    assert (settings.batch_size, settings.lookback_weeks, settings.quota_units_per_second) == (10, 4, 100.0)
    assert settings.quota_costs == QuotaCosts(messages_get=20, history_list=3)
    assert settings.lease_timeout_seconds == 3.0 and settings.prefect_api_url == "http://prefect/api"
    assert "sk-test" not in repr(settings)


def test_empty_values_count_as_unset_and_google_cloud_project_wins(clean_env):
    clean_env.setenv("EMAILSYNC_LOOKBACK_WEEKS", "")
    clean_env.setenv("EMAILSYNC_BATCH_SIZE", "")
    clean_env.setenv("GOOGLE_CLOUD_PROJECT", "first")
    clean_env.setenv("GCLOUD_PROJECT", "second")
    settings = Settings.from_env()
    assert settings.lookback_weeks is None and settings.batch_size == 100
    assert settings.google_cloud_project == "first"


def test_keyword_arguments_win_over_the_environment(clean_env):
    clean_env.setenv("EMAILSYNC_BATCH_SIZE", "10")
    assert Settings(batch_size=3).batch_size == 3
