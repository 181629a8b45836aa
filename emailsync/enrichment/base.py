"""The enrichment interface every backend implements (docs/ARCHITECTURE.md, "Enrichment")."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

from pydantic import BaseModel, Field

if TYPE_CHECKING:  # only annotated: a process that only enriches need not build the storage models
    from emailsync.models import EmailContent

SUMMARY_MAX_CHARS = 300
MAX_TAGS = 3
EMBEDDING_DIMENSIONS = 384


class EnrichmentInput(BaseModel):
    """What an enricher sees of one email: enough to summarise, tag and embed it."""

    message_id: str
    subject: str = ""
    sender: str = ""
    body_text: str = ""

    @classmethod
    def from_email(cls, email: EmailContent) -> EnrichmentInput:
        """What an enricher sees of a parsed (`ParsedEmail`) or stored (`EmailRecord`) email."""
        return cls(
            message_id=email.message_id,
            subject=email.subject,
            sender=email.sender,
            body_text=email.body_text,
        )


class Enrichment(BaseModel):
    """The enrichment stored on an email: `summary`, `tags`, `embedding` (see DESIGN.md)."""

    message_id: str
    summary: str = Field(max_length=SUMMARY_MAX_CHARS)
    tags: list[str]
    embedding: list[float]


@runtime_checkable
class Enricher(Protocol):
    """A backend turning emails into enrichments. Implementations are thread-safe."""

    model_name: str  # stored as `enrichment.model` on every email
    dimensions: int  # 384 for every backend, so stored vectors stay comparable

    def enrich(self, items: list[EnrichmentInput]) -> list[Enrichment]:
        """One enrichment per item, in the order of `items`."""
        ...

    def embed_query(self, text: str) -> list[float]:
        """The unit-norm vector of a search query, comparable with stored email embeddings."""
        ...
