"""The commands that read what was stored: `emailsync status` (syncProgress documents as a table) and
`emailsync search` (nearest emails by embedding)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.table import Table

from emailsync.cli.console import fail, out, require_provider_user
from emailsync.models import EmailRecord, SyncProgress


def status(
    provider_user_id: Annotated[str | None, typer.Argument(help="only this provider user")] = None,
    limit: Annotated[int, typer.Option(help="most recent N documents")] = 50,
) -> None:
    """syncProgress documents as a table, most recent first."""
    from google.cloud.firestore_v1.base_query import FieldFilter

    from emailsync.firestore.client import get_firestore_client

    client = get_firestore_client()
    query = client.collection(SyncProgress.COLLECTION)
    if provider_user_id is not None:
        require_provider_user(provider_user_id)
        query = query.where(filter=FieldFilter("providerUserId", "==", provider_user_id))
    docs = [SyncProgress.from_firestore(snapshot.to_dict()) for snapshot in query.stream()]
    # Sorted here rather than with order_by: no composite index needed for the filtered query.
    docs.sort(key=lambda doc: doc.updatedAt, reverse=True)
    out().print(progress_table(docs[:limit]))


def progress_table(docs: list[SyncProgress]) -> Table:
    table = Table(title=f"syncProgress ({len(docs)})", show_lines=False)
    for column in ("syncId", "user", "status", "progress", "processed/estimate", "trigger", "mode"):
        table.add_column(column, overflow="fold")
    table.add_column("updatedAt")
    table.add_column("error", overflow="fold", style="red")
    colours = {
        "pending": "yellow",
        "in_progress": "cyan",
        "completed": "green",
        "failed": "red",
        "skipped": "dim",
    }
    for doc in docs:
        details = doc.details
        estimate = details.emails_total_estimate
        table.add_row(
            doc.syncId,
            doc.providerUserId,
            f"[{colours[doc.status.value]}]{doc.status.value}[/]",
            f"{doc.progress}%",
            f"{details.emails_processed}/{estimate if estimate is not None else '?'}",
            details.trigger.value,
            details.mode.value if details.mode else "-",
            doc.updatedAt.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
            doc.error or "",
        )
    return table


def search(
    query: Annotated[str, typer.Argument(help="what to look for, in plain words")],
    provider_user_id: Annotated[str, typer.Option(help="whose mailbox to search")],
    limit: Annotated[int, typer.Option(help="number of results")] = 5,
) -> None:
    """Nearest stored emails to QUERY by embedding."""
    if not query.strip():
        raise fail("the query is empty")
    require_provider_user(provider_user_id)
    from emailsync.enrichment import get_enricher
    from emailsync.firestore.client import get_firestore_client
    from emailsync.firestore.emails import EmailRepository

    enricher = get_enricher()
    vector = enricher.embed_query(query)
    results = EmailRepository(get_firestore_client()).find_nearest(provider_user_id, vector, limit=limit)
    if not results:
        out().print(f"no enriched emails stored for {provider_user_id} yet")
        return
    note = incompatible_models_note(results, enricher.model_name)
    table = Table(title=f"nearest to {query!r}")
    for column in ("#", "subject", "from", "date", "summary", "score"):
        table.add_column(column, overflow="fold")
    for rank, record in enumerate(results, start=1):
        table.add_row(
            str(rank),
            record.subject or "(no subject)",
            record.sender,
            record.date.strftime("%Y-%m-%d") if isinstance(record.date, datetime) else "",
            record.summary or "",
            _score(record),
        )
    out().print(table)
    if note:
        out().print(note)


def incompatible_models_note(results: list[EmailRecord], query_model: str) -> str | None:
    """One line when some results were embedded in another vector space than the query (else None)."""
    from emailsync.enrichment.compat import compatible

    others = sorted(
        {
            record.enrichment.model
            for record in results
            if record.enrichment and not compatible(record.enrichment.model, query_model)
        }
    )
    if not others:
        return None
    return (
        f"note: results embedded with {', '.join(others)} are not comparable with the query "
        f"model {query_model}; their scores mean little (re-enrich them or switch EMAILSYNC_LOCAL_BACKEND)"
    )


def _score(record: EmailRecord) -> str:
    from emailsync.firestore.emails import cosine_similarity

    similarity = cosine_similarity(record)
    return f"{similarity:.3f}" if similarity is not None else "-"
