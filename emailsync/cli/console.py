"""What every `emailsync` command shares: its console, one-line errors with their exit codes, log
setup, and the check that a provider user exists."""

from __future__ import annotations

import logging

import typer
from rich.console import Console

EXIT_BAD_INPUT = 2
EXIT_FAILED = 1


def out() -> Console:
    """A console per command: it picks up the terminal width (COLUMNS) of the moment."""
    return Console()


def fail(message: str) -> typer.Exit:
    """Bad input: one line, exit code 2."""
    Console(stderr=True).print(f"[bold red]error:[/] {message}")
    return typer.Exit(code=EXIT_BAD_INPUT)


def fail_outcome(message: str) -> typer.Exit:
    """A command that ran and failed: one line, exit code 1."""
    Console(stderr=True).print(f"[bold red]{message}[/]", highlight=False, soft_wrap=True)
    return typer.Exit(code=EXIT_FAILED)


def configure_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per Prefect API call otherwise


def require_provider_user(provider_user_id: str) -> None:
    from emailsync.firestore.client import get_firestore_client
    from emailsync.firestore.users import ProviderUserRepository

    if ProviderUserRepository(get_firestore_client()).get(provider_user_id) is None:
        raise fail(
            f"unknown provider user {provider_user_id!r} (no providerUsers/{provider_user_id} document)"
        )
