"""`emailsync`: the command line (DESIGN.md, "CLI").

Commands that need Prefect, the flows or the embedding model import them inside the command, so
`emailsync status` and `emailsync --help` start fast.
"""

from __future__ import annotations

import logging
import os
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


EXIT_FAILED = 1


def _fail_outcome(message: str) -> typer.Exit:
    """A command that ran and failed: one line, exit code 1."""
    Console(stderr=True).print(f"[bold red]{message}[/]", highlight=False, soft_wrap=True)
    return typer.Exit(code=EXIT_FAILED)


def _quiet_console() -> None:
    """One line per outcome: log lines (and Prefect's tracebacks) leave the console but still reach
    the Prefect API's run logs, whose handler is not a stream handler."""
    from prefect.logging.configuration import setup_logging

    setup_logging()
    loggers = [logging.getLogger(), *map(logging.getLogger, list(logging.root.manager.loggerDict))]
    for logger in loggers:
        for handler in logger.handlers:
            if isinstance(handler, logging.StreamHandler):
                handler.setLevel(logging.CRITICAL + 1)
    logging.getLogger().addHandler(logging.NullHandler())  # no "last resort" printing either


def _use_local_prefect_server() -> None:
    """Without PREFECT_API_URL, this command's flow runs report to the machine's shared local Prefect
    server (started on first need; `emailsync prefect-server stop` ends it)."""
    if os.environ.get("PREFECT_API_URL"):
        return
    from emailsync.config import get_settings
    from emailsync.local.prefect_server import SharedPrefectServer

    try:
        os.environ["PREFECT_API_URL"] = SharedPrefectServer().ensure()
    except Exception as exc:  # e.g. no `prefect` executable, or it did not answer in time
        raise _fail_outcome(f"could not start the local Prefect server: {exc}") from None
    get_settings.cache_clear()


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
    access_token_ttl_seconds: Annotated[
        float | None, typer.Option(help="issued access tokens expire this long after issue (default 3600)")
    ] = None,
    watch_ttl_seconds: Annotated[
        float | None, typer.Option(help="users.watch expires this long after the call (default 7 days)")
    ] = None,
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
    if access_token_ttl_seconds is not None and access_token_ttl_seconds <= 0:
        raise _fail("--access-token-ttl-seconds must be positive")
    if watch_ttl_seconds is not None and watch_ttl_seconds <= 0:
        raise _fail("--watch-ttl-seconds must be positive")
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
        access_token_ttl_seconds=access_token_ttl_seconds,
        watch_ttl_seconds=watch_ttl_seconds,
        history_retention=history_retention,
    )


@app.command()
def sync(
    provider_user_id: Annotated[str, typer.Argument(help="providerUsers document id")],
    trigger: Annotated[SyncTrigger, typer.Option(help="recorded in syncProgress.details.trigger")] = (
        SyncTrigger.MANUAL
    ),
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="log lines and tracebacks on the console too")
    ] = False,
) -> None:
    """One ad hoc flow run of email_sync for one provider user (one line of output per outcome)."""
    from emailsync.errors import EmailSyncError, describe_error
    from emailsync.reachability import check_firestore

    try:
        check_firestore()
    except EmailSyncError as exc:
        raise _fail_outcome(f"sync failed: {describe_error(exc)}") from None
    _require_provider_user(provider_user_id)
    _use_local_prefect_server()
    if verbose:
        _configure_logging()
    from flows.email_sync import email_sync

    if not verbose:
        _quiet_console()
    try:
        summary = email_sync(provider_user_id, trigger=trigger.value)
    except Exception as exc:  # the flow wrote the cause into syncProgress and the run's logs
        raise _fail_outcome(f"sync failed: {describe_error(exc)}") from (exc if verbose else None)
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
def purge(
    provider_user_id: Annotated[str, typer.Argument(help="providerUsers document id (Gmail disconnected)")],
    batch_size: Annotated[int, typer.Option(min=1, max=500, help="emails deleted per commit")] = 200,
) -> None:
    """Delete a disconnected user's emails, sync state and credentials (resumable, idempotent).

    What `EMAILSYNC_ON_DISCONNECT=purge` makes the watcher do on a disconnect; run it again after a crash,
    or for a user who disconnected while no watcher was running.
    """
    from emailsync.firestore.client import get_firestore_client
    from emailsync.firestore.repositories import ProviderUserRepository
    from emailsync.lifecycle import purge_provider_user

    _require_provider_user(provider_user_id)
    client = get_firestore_client()
    user = ProviderUserRepository(client).get(provider_user_id)
    if user is not None and user.gmail_active:
        raise _fail(f"Gmail of {provider_user_id} is still connected; disconnect it first")
    _configure_logging()
    summary = purge_provider_user(client, provider_user_id, batch_size=batch_size)
    if not summary.completed:
        raise _fail(f"purge of {provider_user_id} stopped: {summary.stopped}")
    _out().print(
        f"purged {provider_user_id}: {summary.emails_deleted} emails deleted in {summary.batches} batches, "
        "credentials and sync state removed"
    )


@app.command()
def sweep(
    shard_index: Annotated[int, typer.Option(help="this sweep's shard (0-based)")] = 0,
    shard_count: Annotated[int, typer.Option(help="how many shards the fleet is split into")] = 1,
) -> None:
    """One run of the periodic sweep (every connected user, now): sync only those that need it."""
    if shard_count < 1 or not 0 <= shard_index < shard_count:
        raise _fail(f"--shard-index must be in 0..{shard_count - 1} and --shard-count at least 1")
    _configure_logging()
    from flows.periodic_sync import periodic_email_sync

    result = periodic_email_sync(shard_index=shard_index, shard_count=shard_count)
    for line in result.summary_lines():
        _out().print(line, soft_wrap=True, highlight=False)


@app.command()
def watch() -> None:
    """The Gmail-connect watcher and, with EMAILSYNC_GMAIL_PUSH_TOPIC set, Gmail push, until interrupted."""
    _configure_logging()
    from deployments.push import PushService
    from deployments.watcher import GmailConnectWatcher
    from emailsync.push.pubsub import PushConfigError

    try:
        push = PushService.from_settings()
    except PushConfigError as exc:
        raise _fail(str(exc)) from None
    watcher = GmailConnectWatcher(on_decision=push.on_watcher_decision if push is not None else None)
    if push is not None:
        push.start()
    try:
        watcher.run_forever()
    finally:
        if push is not None:
            push.stop()


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


automations_app = typer.Typer(help="The Prefect automation kept in deployments/automations.py.")
app.add_typer(automations_app, name="automations")


@automations_app.command("install")
def automations_install(
    webhook_url: Annotated[
        str | None, typer.Option(help="where failures are POSTed (default: EMAILSYNC_ALERT_WEBHOOK_URL)")
    ] = None,
) -> None:
    """Create or update the automation on failed / crashed email-sync runs (PREFECT_API_URL's server)."""
    from deployments.automations import FAILED_SYNC_AUTOMATION, install_automations

    try:
        automation_id = install_automations(webhook_url)
    except Exception as exc:  # unreachable Prefect API: one line
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise _fail(f"could not install the automation: {first_line}") from None
    _out().print(f"automation {FAILED_SYNC_AUTOMATION!r} installed ({automation_id})")


prefect_server_app = typer.Typer(
    help="The local Prefect server CLI commands share when PREFECT_API_URL is unset (stops when idle)."
)
app.add_typer(prefect_server_app, name="prefect-server")


@prefect_server_app.command("start")
def prefect_server_start() -> None:
    """Start the shared local Prefect server (if it is not running) and print its API URL."""
    from emailsync.local.prefect_server import SharedPrefectServer

    _out().print(SharedPrefectServer().ensure(register=False), highlight=False)


@prefect_server_app.command("status")
def prefect_server_status() -> None:
    """The shared local Prefect server's API URL and clients, or that none is running."""
    from emailsync.local.prefect_server import SharedPrefectServer

    server = SharedPrefectServer()
    info = server.info()
    if info is None:
        _out().print("no local Prefect server is running")
        return
    _out().print(f"{info.api_url} ({server.live_clients()} clients)", highlight=False)


@prefect_server_app.command("stop")
def prefect_server_stop() -> None:
    """Stop the shared local Prefect server, whether or not commands still use it."""
    from emailsync.local.prefect_server import SharedPrefectServer

    stopped = SharedPrefectServer().stop()
    _out().print("stopped the local Prefect server" if stopped else "no local Prefect server is running")


def main() -> None:
    use_offline_prefect_defaults()
    app()


if __name__ == "__main__":
    main()
