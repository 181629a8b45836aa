"""`get_enricher()`: the process-wide enricher for the current settings."""

from __future__ import annotations

import threading

from emailsync.config import Settings, get_settings
from emailsync.enrichment.base import Enricher

_lock = threading.Lock()
_enrichers: dict[tuple[str | None, ...], Enricher] = {}


def _cache_key(settings: Settings) -> tuple[str | None, ...]:
    if not settings.openai_api_key:
        return ("local", settings.local_backend, settings.local_onnx_precision, str(settings.local_threads))
    return (
        "openai",
        settings.openai_api_key,
        settings.openai_base_url,
        settings.openai_chat_model,
        settings.openai_embedding_model,
        str(settings.embedding_dimensions),
    )


def get_enricher(settings: Settings | None = None) -> Enricher:
    """OpenAI backend if `settings.openai_api_key`, else the local one; one instance per configuration.

    Tests that switch backends through the environment call `get_enricher.cache_clear()` (after
    `get_settings.cache_clear()`), like with `get_settings`.
    """
    settings = settings or get_settings()
    key = _cache_key(settings)
    with _lock:
        enricher = _enrichers.get(key)
        if enricher is None:
            if key[0] == "local":
                from emailsync.enrichment.local import LocalEnricher

                enricher = LocalEnricher(settings=settings)
            else:
                from emailsync.enrichment.openai_backend import OpenAIEnricher

                enricher = OpenAIEnricher(settings)
            _enrichers[key] = enricher
        return enricher


def _cache_clear() -> None:
    with _lock:
        _enrichers.clear()


get_enricher.cache_clear = _cache_clear  # type: ignore[attr-defined]
