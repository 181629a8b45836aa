"""Enrichment: summary, tags and embedding per email, behind one `Enricher` interface.

`get_enricher()` picks the backend from the settings: OpenAI when `OPENAI_API_KEY` is set, else the
offline MiniLM model. Backends are built once per process (the local model takes seconds to load).
"""

from emailsync.enrichment.base import (
    EMBEDDING_DIMENSIONS,
    MAX_TAGS,
    SUMMARY_MAX_CHARS,
    Enricher,
    Enrichment,
    EnrichmentInput,
)
from emailsync.enrichment.factory import get_enricher
from emailsync.enrichment.taxonomy import TAG_DESCRIPTIONS, TAXONOMY

__all__ = [
    "EMBEDDING_DIMENSIONS",
    "MAX_TAGS",
    "SUMMARY_MAX_CHARS",
    "TAG_DESCRIPTIONS",
    "TAXONOMY",
    "Enricher",
    "Enrichment",
    "EnrichmentInput",
    "get_enricher",
]
