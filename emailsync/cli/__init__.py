"""`emailsync`: the command line (DESIGN.md, "CLI"), one table of its commands.

The commands live by job: `local.py` (demo, the local Gmail server, the shared local Prefect server),
`backend.py` (sync, sweep, watch, serve, the automation), `accounts.py` (purge, sign-in users) and
`queries.py` (status, search); `console.py` holds what they share (one-line errors, exit codes).
Commands that need Prefect, the flows or the embedding model import them inside the command, so
`emailsync status` and `emailsync --help` start fast.
"""

from __future__ import annotations

import typer

from emailsync.cli import accounts, backend, local, queries
from emailsync.config import use_offline_prefect_defaults

app = typer.Typer(
    name="emailsync",
    help="Gmail sync backend: backfill, enrich and store mailboxes in Firestore, orchestrated by Prefect.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

app.command()(local.demo)
app.command("gmail-server")(local.gmail_server)
app.command()(backend.sync)
app.command()(accounts.purge)
app.command()(backend.sweep)
app.command()(backend.watch)
app.command()(backend.serve)
app.command()(queries.status)
app.command()(queries.search)
app.add_typer(accounts.user_app, name="user")
app.add_typer(backend.automations_app, name="automations")
app.add_typer(local.prefect_server_app, name="prefect-server")


def main() -> None:
    use_offline_prefect_defaults()
    app()
