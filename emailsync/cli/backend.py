"""The commands that run the backend: one sync (`emailsync sync`), one sweep, the watcher with push
(`emailsync watch`), the deployments (`emailsync serve`) and the failure automation
(`emailsync automations install`). They import Prefect, the flows and the deployments inside the
command, so the other commands start fast."""

from __future__ import annotations

import logging
import os
from typing import Annotated

import typer

from emailsync.cli.console import configure_logging, fail, fail_outcome, out, require_provider_user
from emailsync.models import SyncTrigger


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
        raise fail_outcome(f"could not start the local Prefect server: {exc}") from None
    get_settings.cache_clear()


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
        raise fail_outcome(f"sync failed: {describe_error(exc)}") from None
    require_provider_user(provider_user_id)
    _use_local_prefect_server()
    if verbose:
        configure_logging()
    from flows.email_sync import email_sync

    if not verbose:
        _quiet_console()
    try:
        summary = email_sync(provider_user_id, trigger=trigger.value)
    except Exception as exc:  # the flow wrote the cause into syncProgress and the run's logs
        raise fail_outcome(f"sync failed: {describe_error(exc)}") from (exc if verbose else None)
    if summary.skipped:
        out().print(f"skipped: sync {summary.active_sync_id} of {provider_user_id} is still running")
        return
    out().print(
        f"sync {summary.sync_id} ({summary.mode.value if summary.mode else '-'}) completed: "
        f"{summary.emails_processed} emails processed, {summary.emails_stored} stored, "
        f"{summary.emails_enriched} enriched, {summary.parse_errors} with parse errors, "
        f"{summary.batches} batches in {summary.timings.wall_seconds:.1f}s"
    )


def sweep(
    shard_index: Annotated[int, typer.Option(help="this sweep's shard (0-based)")] = 0,
    shard_count: Annotated[int, typer.Option(help="how many shards the fleet is split into")] = 1,
) -> None:
    """One run of the periodic sweep (every connected user, now): sync only those that need it."""
    if shard_count < 1 or not 0 <= shard_index < shard_count:
        raise fail(f"--shard-index must be in 0..{shard_count - 1} and --shard-count at least 1")
    configure_logging()
    from flows.periodic_sync import periodic_email_sync

    result = periodic_email_sync(shard_index=shard_index, shard_count=shard_count)
    for line in result.summary_lines():
        out().print(line, soft_wrap=True, highlight=False)


def watch() -> None:
    """The Gmail-connect watcher and, with EMAILSYNC_GMAIL_PUSH_TOPIC set, Gmail push, until interrupted."""
    configure_logging()
    from deployments.push import PushService
    from deployments.watcher import GmailConnectWatcher
    from emailsync.push.pubsub import PushConfigError

    try:
        push = PushService.from_settings()
    except PushConfigError as exc:
        raise fail(str(exc)) from None
    watcher = GmailConnectWatcher(on_decision=push.on_watcher_decision if push is not None else None)
    if push is not None:
        push.start()
    try:
        watcher.run_forever()
    finally:
        if push is not None:
            push.stop()


def serve() -> None:
    """The deployments in one process (on-demand sync + hourly schedule) plus the watcher."""
    configure_logging()
    from deployments.serve import serve as serve_deployments

    serve_deployments()


automations_app = typer.Typer(help="The Prefect automation kept in deployments/automations.py.")


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
        raise fail(f"could not install the automation: {first_line}") from None
    out().print(f"automation {FAILED_SYNC_AUTOMATION!r} installed ({automation_id})")
