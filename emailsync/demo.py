"""`emailsync demo` / `make demo`: the whole pipeline, locally, in one process tree.

Firestore emulator -> local Gmail server on the sample mailbox (dates shifted to "now", production
quota) -> a seeded family and provider user -> the watcher -> Gmail connect -> the email_sync flow
(in-process, reporting to a temporary Prefect server) -> a live progress bar fed by a listener on
the syncProgress document -> what was stored, tags, a summary and a semantic search. Everything it
starts is stopped on the way out, also on Ctrl-C and errors.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from emailsync.config import get_settings, use_offline_prefect_defaults
from emailsync.demo_push import start_pubsub_emulator
from emailsync.firestore.client import get_firestore_client, reset_clients
from emailsync.local.firestore_emulator import FirestoreEmulator
from emailsync.models import SyncProgress, SyncStatus

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE_MBOX = REPO_ROOT / "samples" / "sample.mbox"
DEMO_PROJECT = "omnibutler-local"
DEMO_PROVIDER_USER = "pu-alex-gmail"
SEARCH_QUERY = "software release announcement"
SYNC_TIMEOUT_SECONDS = 900.0


def run_demo(mbox: Path | None = None, console: Console | None = None) -> int:
    """Run the demo; returns the process exit code (0 = the sync completed)."""
    console = console or Console()
    mbox = mbox or SAMPLE_MBOX
    # Prefect's own INFO lines would tear the progress bar apart; its warnings still show.
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    use_offline_prefect_defaults()
    started = time.monotonic()
    code = 1
    with contextlib.ExitStack() as stack:  # everything started, stopped in reverse order
        try:
            code = _run(stack, mbox, console, started)
        except KeyboardInterrupt:
            console.print("\n[yellow]interrupted: stopping everything the demo started[/]")
            code = 130
        except Exception as exc:
            console.print(f"[red]demo failed:[/] {type(exc).__name__}: {exc}")
            code = 1
        if code != 0:
            # An abandoned sync now fails against the stopped servers: expected, so not shown.
            logging.disable(logging.CRITICAL)
    if code != 0:
        # Its threads (and Prefect's task threads) would hold the interpreter open while they retry;
        # everything the demo started is stopped by now, so end the process right here.
        console.file.flush()
        os._exit(code)
    return code


def _run(stack: contextlib.ExitStack, mbox: Path, console: Console, started: float) -> int:
    console.rule("[bold]emailsync demo")
    prefect_ready = _start_prefect_server(stack)
    auth_ready = _start_auth_emulator(stack)
    with console.status("starting the Firestore emulator (Java)..."):
        emulator = FirestoreEmulator(rules_path=REPO_ROOT / "firestore.rules").start()
    stack.callback(emulator.stop)
    _set_env(emulator.environ(DEMO_PROJECT))
    console.print(f"[green]✓[/] Firestore emulator on {emulator.host} (rules: firestore.rules)")
    # After the Firestore emulator: two JVMs booting at once starve each other on a small machine.
    pubsub_ready = start_pubsub_emulator(stack)

    gmail = _start_gmail_server(mbox)
    stack.callback(gmail.stop)
    _set_env({"GMAIL_API_ENDPOINT": gmail.url})
    console.print(
        f"[green]✓[/] local Gmail API on {gmail.url}: {mbox.name}, dates shifted to now, quota 250 units/s"
    )

    client = get_firestore_client()
    from emailsync.local.seed import connect_gmail, seed_account

    account = seed_account(client, provider_user_id=DEMO_PROVIDER_USER, email="alex@example.com")
    console.print(
        f"[green]✓[/] seeded family {account.family_id} ({len(account.member_ids)} members), "
        f"app user {account.app_user_id}, provider user {account.provider_user_id} (Gmail not connected)"
    )

    auth_host = _create_sign_in_user(
        auth_ready, account.app_user_id, account.email, account.family_id, console
    )
    web_url = _start_web_page(stack, emulator.host, auth_host, console)

    if prefect_ready is not None:
        with console.status("waiting for the temporary Prefect server (about 10 s on a cold start)..."):
            prefect_url = prefect_ready.result()
        console.print(f"[green]✓[/] temporary Prefect server on {prefect_url} (no PREFECT_API_URL set)")
    from deployments.watcher import GmailConnectWatcher, InProcessLauncher

    push = _start_push(stack, client, pubsub_ready, console)
    watcher = GmailConnectWatcher(
        client,
        launcher=InProcessLauncher(max_workers=2),
        on_decision=push.on_watcher_decision if push is not None else None,
    ).start()
    stack.callback(watcher.stop, wait=False)
    console.print("[green]✓[/] watcher listening on providerUsers (services.gmail.active == true)")

    tracker = ProgressTracker(client, account.provider_user_id)
    stack.callback(tracker.close)
    connect_gmail(client, account.provider_user_id)
    console.print(f"[bold]→ {account.email} connects Gmail[/] (services.gmail.active = true)")
    if web_url:
        console.print(f"  live progress in the browser: [link={web_url}]{web_url}[/link]")
        if auth_host:
            console.print(f"  sign in as {account.email} / password {DEMO_PASSWORD}")

    final = _show_progress(tracker, console)
    if final is None:
        console.print("[red]the sync did not finish in time[/]")
        return 1
    if final.status == SyncStatus.FAILED:
        console.print(f"[red]sync {final.syncId} failed:[/] {final.error}")
        return 1
    _print_results(client, account.provider_user_id, final, console)
    if push is not None:
        from emailsync.demo_push import show_push_sync

        if not show_push_sync(client, gmail, account.provider_user_id, account.token, account.email, console):
            return 1
    console.print(f"[dim]demo finished in {time.monotonic() - started:.0f} s; stopping everything[/]")
    return 0


def _set_env(values: dict[str, str]) -> None:
    """Point this process at the local servers. Not restored on exit: the demo owns its process, and
    an abandoned sync thread must never fall back to production endpoints while the process ends."""
    os.environ.update(values)
    get_settings.cache_clear()
    reset_clients()


def _start_prefect_server(stack: contextlib.ExitStack) -> Future[str] | None:
    """Without PREFECT_API_URL: a temporary Prefect server for the demo's flow runs, started in the
    background while the emulator boots. Its own home (sqlite) lives in a temporary directory, and it is
    a child process group the demo stops, so an interrupted demo leaves nothing behind."""
    if get_settings().prefect_api_url:
        return None
    from deployments.serve import PrefectServerProcess

    home = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="emailsync-demo-prefect-")))
    server = PrefectServerProcess(home)
    # Before anything imports Prefect: its settings are read once, from the environment.
    _set_env({"PREFECT_API_URL": server.api_url})
    stack.callback(server.stop)
    starter = stack.enter_context(ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefect-server"))
    return starter.submit(lambda: server.start().api_url)


def _start_gmail_server(mbox: Path) -> Any:
    from emailsync.local.gmail_server.server import GmailApiServer
    from emailsync.local.mailbox import Mailbox

    mailbox = Mailbox.from_mbox(mbox, shift_dates=True)
    return GmailApiServer(mailbox, quota_units_per_second=get_settings().quota_units_per_second).start()


def _start_push(
    stack: contextlib.ExitStack, client: firestore.Client, pubsub_ready: Future[str] | None, console: Console
) -> Any:
    """Gmail push as `emailsync watch` runs it (listener, watches), its syncs in this process."""
    if pubsub_ready is None:
        console.print("[yellow]Pub/Sub emulator not installed: no Gmail push, polling only[/]")
        return None
    from deployments.push import PushService, PushSyncRunner
    from emailsync.demo_push import DEMO_TOPIC_NAME
    from emailsync.push.pubsub import push_target

    try:
        with console.status("waiting for the Pub/Sub emulator (Java)..."):
            host = pubsub_ready.result()
        topic = f"projects/{DEMO_PROJECT}/topics/{DEMO_TOPIC_NAME}"
        _set_env({"PUBSUB_EMULATOR_HOST": host, "EMAILSYNC_GMAIL_PUSH_TOPIC": topic})
        target = push_target(get_settings())
        assert target is not None
        push = PushService(target, client, runner=PushSyncRunner(client)).start()
    except Exception as exc:  # push is the demo's last act; the backfill goes on without it
        console.print(f"[yellow]Gmail push not started: {exc}[/]")
        return None
    stack.callback(push.stop)
    console.print(f"[green]✓[/] Pub/Sub emulator on {host}: Gmail push to {topic}, streaming pull listening")
    return push


DEMO_PASSWORD = "demo-password"


def _start_auth_emulator(stack: contextlib.ExitStack) -> Future[str] | None:
    """The Firebase Auth emulator (firebase-tools, Node; ~7 s), started in the background like Prefect."""
    from emailsync.local.auth_emulator import AuthEmulator, AuthEmulatorNotFoundError, find_firebase_cli

    try:
        find_firebase_cli()
    except AuthEmulatorNotFoundError:
        return None
    emulator = AuthEmulator(DEMO_PROJECT)
    stack.callback(emulator.stop)
    starter = stack.enter_context(ThreadPoolExecutor(max_workers=1, thread_name_prefix="auth-emulator"))
    return starter.submit(lambda: emulator.start().host)


def _create_sign_in_user(
    auth_ready: Future[str] | None, uid: str, email: str, family_id: str | None, console: Console
) -> str | None:
    """Host of the Auth emulator with a sign-in user for the seeded app user; None if it is unavailable."""
    if auth_ready is None:
        console.print("[yellow]Auth emulator not installed (run `make web`): no sign-in for the page[/]")
        return None
    try:
        with console.status("waiting for the Firebase Auth emulator (Node, about 7 s)..."):
            host = auth_ready.result()
        _set_env({"FIREBASE_AUTH_EMULATOR_HOST": host})
        from emailsync.sign_in_users import create_sign_in_user

        create_sign_in_user(email, DEMO_PASSWORD, uid=uid, family_id=family_id, project=DEMO_PROJECT)
    except Exception as exc:  # the page is a bonus; the demo goes on without it
        console.print(f"[yellow]Auth emulator not started: {exc}[/]")
        return None
    console.print(
        f"[green]✓[/] Firebase Auth emulator on {host}: sign-in user {email} (claim familyId {family_id})"
    )
    return host


def _start_web_page(
    stack: contextlib.ExitStack, firestore_host: str, auth_host: str | None, console: Console
) -> str | None:
    try:
        from emailsync.local.web_server import start_web_server
    except ImportError:
        return None
    try:
        handle = start_web_server(firestore_host, DEMO_PROJECT, auth_host=auth_host)
    except Exception as exc:  # the page is a bonus; the demo goes on without it
        console.print(f"[yellow]web progress page not started: {exc}[/]")
        return None
    stack.callback(handle.stop)
    return handle.url


class ProgressTracker:
    """Live view of the newest syncProgress document of one provider user (a Firestore listener)."""

    def __init__(self, client: firestore.Client, provider_user_id: str) -> None:
        self.latest: SyncProgress | None = None
        self.changed = threading.Condition()
        query = client.collection(SyncProgress.COLLECTION).where(
            filter=FieldFilter("providerUserId", "==", provider_user_id)
        )
        self._watch = query.on_snapshot(self._on_snapshot)

    def _on_snapshot(self, docs: list[Any], changes: list[Any], read_time: Any) -> None:
        progress = [SyncProgress.from_firestore(doc.to_dict()) for doc in docs]
        if not progress:
            return
        newest = max(progress, key=lambda p: p.startedAt)
        with self.changed:
            self.latest = newest
            self.changed.notify_all()

    def updates(self, timeout: float) -> Iterator[SyncProgress]:
        """Yield every new state until a terminal one (or the timeout)."""
        deadline = time.monotonic() + timeout
        seen: tuple[object, ...] | None = None
        while time.monotonic() < deadline:
            with self.changed:
                self.changed.wait(timeout=0.5)
                current = self.latest
            if current is None:
                continue
            key = (current.syncId, current.status, current.progress, current.updatedAt)
            if key != seen:
                seen = key
                yield current
            if current.status.terminal:
                return

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._watch.unsubscribe()


def _describe(progress: SyncProgress) -> str:
    details = progress.details
    estimate = details.emails_total_estimate
    text = f"{progress.status.value:<11} {details.emails_processed}/{estimate if estimate else '?'} emails"
    if details.mode:
        text += f" · {details.mode.value}"
    if details.current_window:
        window = details.current_window
        text += f" · week {window.start:%Y-%m-%d}..{window.end:%Y-%m-%d}"
    return text


def _show_progress(tracker: ProgressTracker, console: Console) -> SyncProgress | None:
    final: SyncProgress | None = None
    with Progress(
        TextColumn("[bold]sync"),
        BarColumn(bar_width=40),
        TaskProgressColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as bar:
        task = bar.add_task("waiting for the watcher...", total=100)
        for progress in tracker.updates(timeout=SYNC_TIMEOUT_SECONDS):
            bar.update(task, completed=progress.progress, description=_describe(progress))
            final = progress
    return final if final is not None and final.status.terminal else None


def _print_results(
    client: firestore.Client, provider_user_id: str, final: SyncProgress, console: Console
) -> None:
    emails = client.collection("providerUsers").document(provider_user_id).collection("emails")
    fields = ["subject", "from", "summary", "tags", "truncated", "parseErrors", "enrichment"]
    rows = [snapshot.to_dict() or {} for snapshot in emails.select(fields).stream()]
    enriched = sum(1 for row in rows if row.get("enrichment"))
    with_parse_errors = sum(1 for row in rows if row.get("parseErrors"))
    truncated = sum(1 for row in rows if row.get("truncated"))
    tags = Counter(tag for row in rows for tag in row.get("tags") or [])

    details = final.details
    console.print(
        f"\n[bold green]sync {final.syncId} completed[/] ({details.mode.value if details.mode else '-'}, "
        f"trigger {details.trigger.value}, {details.batches} batches)"
    )
    counts = Table(title="stored in Firestore", show_header=False)
    counts.add_column("what")
    counts.add_column("count", justify="right")
    counts.add_row(f"providerUsers/{provider_user_id}/emails", str(len(rows)))
    counts.add_row("  enriched (summary, tags, embedding)", str(enriched))
    counts.add_row("  with parse errors (kept, raw headers stored)", str(with_parse_errors))
    counts.add_row("  body truncated (1 MiB document limit)", str(truncated))
    console.print(counts)

    tag_table = Table(title="tags")
    tag_table.add_column("tag")
    tag_table.add_column("emails", justify="right")
    for tag, count in tags.most_common(10):
        tag_table.add_row(tag, str(count))
    console.print(tag_table)

    # A readable example: a real summary (not a one-liner) of a message that isn't spam.
    candidates = [r for r in rows if r.get("subject") and "spam" not in (r.get("tags") or [])]
    sample = next((r for r in candidates if 60 <= len(r.get("summary") or "") <= 240), None)
    if sample:
        console.print(f"[bold]sample[/] {sample['subject']!r} from {sample.get('from', '')}")
        console.print(f"  summary: {sample['summary']}")
        console.print(f"  tags: {', '.join(sample.get('tags') or [])}")

    _print_search(client, provider_user_id, console, SEARCH_QUERY)


def _print_search(client: firestore.Client, provider_user_id: str, console: Console, query: str) -> None:
    from emailsync.enrichment import get_enricher
    from emailsync.firestore.emails import EmailRepository, cosine_similarity

    vector = get_enricher().embed_query(query)
    results = EmailRepository(client).find_nearest(provider_user_id, vector, limit=3)
    console.print(f'\n[bold]semantic search[/] "{query}" (emailsync search "{query}" --provider-user-id ...)')
    for rank, record in enumerate(results, start=1):
        similarity = cosine_similarity(record)
        score = f" (similarity {similarity:.2f})" if similarity is not None else ""
        console.print(f"  {rank}. {record.subject!r} from {record.sender}{score}")
        if record.summary:
            console.print(f"     {record.summary}")


if __name__ == "__main__":
    raise SystemExit(run_demo())
