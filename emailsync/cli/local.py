"""The commands of the local stand-ins: `emailsync demo`, `emailsync gmail-server` and the shared local
Prefect server (`emailsync prefect-server start|status|stop`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from emailsync.cli.console import configure_logging, fail, out


def demo(
    mbox: Annotated[
        Path | None, typer.Option(help="mailbox to sync (default: samples/sample.mbox)", dir_okay=False)
    ] = None,
) -> None:
    """Everything local in one process tree: emulator, Gmail server, a user connects, live progress."""
    from emailsync.demo import run_demo

    if mbox is not None and not mbox.is_file():
        raise fail(f"mailbox not found: {mbox}")
    raise typer.Exit(code=run_demo(mbox=mbox, console=out()))


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
        raise fail(f"mailbox not found: {mbox}")
    if not 0.0 <= fail_rate <= 1.0:
        raise fail("--fail-rate must be between 0 and 1")
    if access_token_ttl_seconds is not None and access_token_ttl_seconds <= 0:
        raise fail("--access-token-ttl-seconds must be positive")
    if watch_ttl_seconds is not None and watch_ttl_seconds <= 0:
        raise fail("--watch-ttl-seconds must be positive")
    if history_retention is not None and history_retention < 1:
        raise fail("--history-retention must be at least 1")
    from emailsync.local.gmail_server.server import run_gmail_server

    configure_logging()
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


prefect_server_app = typer.Typer(
    help="The local Prefect server CLI commands share when PREFECT_API_URL is unset (stops when idle)."
)


@prefect_server_app.command("start")
def prefect_server_start() -> None:
    """Start the shared local Prefect server (if it is not running) and print its API URL."""
    from emailsync.local.prefect_server import SharedPrefectServer

    out().print(SharedPrefectServer().ensure(register=False), highlight=False)


@prefect_server_app.command("status")
def prefect_server_status() -> None:
    """The shared local Prefect server's API URL and clients, or that none is running."""
    from emailsync.local.prefect_server import SharedPrefectServer

    server = SharedPrefectServer()
    info = server.info()
    if info is None:
        out().print("no local Prefect server is running")
        return
    out().print(f"{info.api_url} ({server.live_clients()} clients)", highlight=False)


@prefect_server_app.command("stop")
def prefect_server_stop() -> None:
    """Stop the shared local Prefect server, whether or not commands still use it."""
    from emailsync.local.prefect_server import SharedPrefectServer

    stopped = SharedPrefectServer().stop()
    out().print("stopped the local Prefect server" if stopped else "no local Prefect server is running")
