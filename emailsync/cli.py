"""`emailsync`: the command line (DESIGN.md, "CLI").

Commands that need Prefect, the flows or the embedding model import them inside the command, so
`emailsync status` and `emailsync --help` start fast.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from emailsync.config import use_offline_prefect_defaults
from emailsync.models import EmailRecord, SyncProgress, SyncTrigger

app = typer.Typer(
    name="emailsync",
    help="Gmail sync backend: backfill, enrich and store mailboxes in Firestore, orchestrated by Prefect.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _out() -> Console:
    """A console per command: it picks up the terminal width (COLUMNS) of the moment."""
    return Console()


EXIT_BAD_INPUT = 2


def _fail(message: str) -> typer.Exit:
    Console(stderr=True).print(f"[bold red]error:[/] {message}")
    return typer.Exit(code=EXIT_BAD_INPUT)


def _configure_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per Prefect API call otherwise


def _require_provider_user(provider_user_id: str) -> None:
    from emailsync.firestore.client import get_firestore_client
    from emailsync.firestore.repositories import ProviderUserRepository

    if ProviderUserRepository(get_firestore_client()).get(provider_user_id) is None:
        raise _fail(
            f"unknown provider user {provider_user_id!r} (no providerUsers/{provider_user_id} document)"
        )


# ------------------------------------------------------------------------------------------ commands


@app.command()
def demo(
    mbox: Annotated[
        Path | None, typer.Option(help="mailbox to sync (default: samples/sample.mbox)", dir_okay=False)
    ] = None,
) -> None:
    """Everything local in one process tree: emulator, Gmail server, a user connects, live progress."""
    from emailsync.demo import run_demo

    if mbox is not None and not mbox.is_file():
        raise _fail(f"mailbox not found: {mbox}")
    raise typer.Exit(code=run_demo(mbox=mbox, console=_out()))


@app.command("gmail-server")
def gmail_server(
    mbox: Annotated[Path, typer.Option(help="mbox file served as the mailbox", dir_okay=False)],
    port: Annotated[int, typer.Option(help="port on 127.0.0.1 (0 = any free port)")] = 8085,
    quota_units_per_second: Annotated[float, typer.Option(help="Gmail per-user quota")] = 250.0,
    fail_rate: Annotated[float, typer.Option(help="fraction of requests answered with a 5xx")] = 0.0,
    latency_ms: Annotated[int, typer.Option(help="added latency per request")] = 0,
    history_retention: Annotated[
        int | None,
        typer.Option(help="history records kept per user; an older startHistoryId gets 404 (default: all)"),
    ] = None,
) -> None:
    """The local Gmail-API-compatible server: each bearer token is its own user with its own copy of
    the mbox (messages, labels, history, profile, batch; see emailsync/local/gmail_server/server.py)."""
    if not mbox.is_file():
        raise _fail(f"mailbox not found: {mbox}")
    if not 0.0 <= fail_rate <= 1.0:
        raise _fail("--fail-rate must be between 0 and 1")
    if history_retention is not None and history_retention < 1:
        raise _fail("--history-retention must be at least 1")
    from emailsync.local.gmail_server.server import run_gmail_server

    _configure_logging()
    run_gmail_server(
        mbox,
        port=port,
        quota_units_per_second=quota_units_per_second,
        fail_rate=fail_rate,
        latency_ms=latency_ms,
        shift_dates=True,
        history_retention=history_retention,
    )


@app.command()
def sync(
    provider_user_id: Annotated[str, typer.Argument(help="providerUsers document id")],
    trigger: Annotated[SyncTrigger, typer.Option(help="recorded in syncProgress.details.trigger")] = (
        SyncTrigger.MANUAL
    ),
) -> None:
    """One ad hoc flow run of email_sync for one provider user."""
    _require_provider_user(provider_user_id)
    _configure_logging()
    from flows.email_sync import email_sync

    try:
        summary = email_sync(provider_user_id, trigger=trigger.value)
    except Exception as exc:  # the flow already wrote the cause into syncProgress
        Console(stderr=True).print(f"[bold red]sync failed:[/] {exc}")
        raise typer.Exit(code=1) from exc
    if summary.skipped:
        _out().print(f"skipped: sync {summary.active_sync_id} of {provider_user_id} is still running")
        return
    _out().print(
        f"sync {summary.sync_id} ({summary.mode.value if summary.mode else '-'}) completed: "
        f"{summary.emails_processed} emails processed, {summary.emails_stored} stored, "
        f"{summary.emails_enriched} enriched, {summary.parse_errors} with parse errors, "
        f"{summary.batches} batches in {summary.timings.wall_seconds:.1f}s"
    )


@app.command()
def watch() -> None:
    """The Gmail-connect watcher, until interrupted."""
    _configure_logging()
    from deployments.watcher import GmailConnectWatcher

    GmailConnectWatcher().run_forever()


@app.command()
def serve() -> None:
    """The deployments in one process (on-demand sync + hourly schedule) plus the watcher."""
    _configure_logging()
    from deployments.serve import serve as serve_deployments

    serve_deployments()


@app.command()
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
        _require_provider_user(provider_user_id)
        query = query.where(filter=FieldFilter("providerUserId", "==", provider_user_id))
    docs = [SyncProgress.from_firestore(snapshot.to_dict()) for snapshot in query.stream()]
    # Sorted here rather than with order_by: no composite index needed for the filtered query.
    docs.sort(key=lambda doc: doc.updatedAt, reverse=True)
    _out().print(progress_table(docs[:limit]))


def progress_table(docs: list[SyncProgress]) -> Table:
    table = Table(title=f"syncProgress ({len(docs)})", show_lines=False)
    for column in ("syncId", "user", "status", "progress", "processed/estimate", "trigger", "mode"):
        table.add_column(column, overflow="fold")
    table.add_column("updatedAt")
    table.add_column("error", overflow="fold", style="red")
    colours = {"pending": "yellow", "in_progress": "cyan", "completed": "green", "failed": "red"}
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


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="what to look for, in plain words")],
    provider_user_id: Annotated[str, typer.Option(help="whose mailbox to search")],
    limit: Annotated[int, typer.Option(help="number of results")] = 5,
) -> None:
    """Nearest stored emails to QUERY by embedding."""
    if not query.strip():
        raise _fail("the query is empty")
    _require_provider_user(provider_user_id)
    from emailsync.enrichment import get_enricher
    from emailsync.firestore.client import get_firestore_client
    from emailsync.firestore.repositories import EmailRepository

    enricher = get_enricher()
    vector = enricher.embed_query(query)
    results = EmailRepository(get_firestore_client()).find_nearest(provider_user_id, vector, limit=limit)
    if not results:
        _out().print(f"no enriched emails stored for {provider_user_id} yet")
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
    _out().print(table)
    if note:
        _out().print(note)


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
    from emailsync.firestore.repositories import cosine_similarity

    similarity = cosine_similarity(record)
    return f"{similarity:.3f}" if similarity is not None else "-"


user_app = typer.Typer(help="Sign-in users of the web app (Firebase Authentication) and their claims.")
app.add_typer(user_app, name="user")


@user_app.command("create")
def user_create(
    email: Annotated[str, typer.Argument(help="sign-in e-mail address")],
    password: Annotated[str, typer.Option(help="sign-in password (at least 6 characters)")],
    admin: Annotated[bool, typer.Option("--admin", help="custom claim admin = true")] = False,
    family_id: Annotated[str | None, typer.Option(help="custom claim familyId")] = None,
    uid: Annotated[str | None, typer.Option(help="the user's uid = its appUsers id (default: new)")] = None,
) -> None:
    """Create (or update) an email + password user and set its `admin` / `familyId` claims.

    Uses the Auth emulator at FIREBASE_AUTH_EMULATOR_HOST when set, else the real project.
    """
    from emailsync.sign_in_users import SignInUserError, create_sign_in_user

    if "@" not in email:
        raise _fail(f"not an e-mail address: {email!r}")
    try:
        user = create_sign_in_user(email, password, uid=uid, admin=admin, family_id=family_id)
    except SignInUserError as exc:
        raise _fail(str(exc)) from None
    except Exception as exc:  # unreachable emulator, missing credentials: one line, not a traceback
        raise _fail(
            f"could not create {email}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        ) from None
    _out().print(f"user {user.uid} ({user.email}) claims {user.claims}")


def main() -> None:
    use_offline_prefect_defaults()
    app()


if __name__ == "__main__":
    main()
