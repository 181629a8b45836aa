"""Which stored embeddings a query vector may be compared with (`enrichment.model` on each email).

Two model names are compatible when they share a model family, a dimension count and a vector-space
id. The space id says which numbers a vector holds: the ONNX and torch runtimes of the local model
compute the same fp32 vectors, so they share one; another precision or another model does not.
"""

from __future__ import annotations

from dataclasses import dataclass

from emailsync.enrichment.base import EMBEDDING_DIMENSIONS


@dataclass(frozen=True)
class EmbeddingSpace:
    family: str
    dimensions: int
    space: str


def embedding_space(model_name: str, dimensions: int = EMBEDDING_DIMENSIONS) -> EmbeddingSpace:
    """The space of the vectors an enricher named `model_name` writes."""
    provider, _, rest = model_name.partition(":")
    if provider == "local":
        family, _, runtime = rest.partition(":")
        # Names without a runtime suffix were written by the torch runtime, before there were two.
        precision = runtime.rpartition("-")[2] if runtime else "fp32"
        return EmbeddingSpace(family, dimensions, f"{family}/{precision}")
    if provider == "openai":
        embedding_model = rest.rpartition("+")[2]
        return EmbeddingSpace(embedding_model, dimensions, f"openai:{embedding_model}")
    return EmbeddingSpace(model_name, dimensions, model_name)


def compatible(stored_model: str, query_model: str, dimensions: int = EMBEDDING_DIMENSIONS) -> bool:
    """Whether vectors from `stored_model` can be ranked against a query embedded by `query_model`."""
    return embedding_space(stored_model, dimensions) == embedding_space(query_model, dimensions)
