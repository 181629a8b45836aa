"""`emailsync status` and `emailsync search` on seeded data in the real emulator (typer's CliRunner)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from google.cloud import firestore
from typer.testing import CliRunner

from emailsync.cli import app
from emailsync.cli.console import EXIT_BAD_INPUT
from emailsync.enrichment import get_enricher
from emailsync.enrichment.base import EnrichmentInput
from emailsync.firestore.emails import EmailRepository
from emailsync.firestore.progress import ProgressWriter
from emailsync.local.seed import seed_account
from emailsync.models import EmailRecord, EnrichmentInfo, SyncMode, SyncTrigger

pytestmark = pytest.mark.integration

runner = CliRunner()

EMAILS = [
    (
        "m-release",
        "Python 3.14.0 final is released",
        "release@python.org",
        "We are pleased to announce the release of Python 3.14.0, the newest major version.",
    ),
    (
        "m-dinner",
        "Dinner on Saturday?",
        "grandma@example.com",
        "Would you all like to come over for dinner on Saturday evening? I will cook lasagne.",
    ),
    (
        "m-invoice",
        "Your electricity invoice for March",
        "billing@power.example",
        "Your invoice of 84.20 EUR for March is due on April 15. Pay by bank transfer.",
    ),
]


def _store_enriched_emails(client: firestore.Client, provider_user_id: str, app_user_id: str) -> None:
    enricher = get_enricher()
    inputs = [EnrichmentInput(message_id=m, subject=s, sender=f, body_text=b) for m, s, f, b in EMAILS]
    enrichments = enricher.enrich(inputs)
    records = [
        EmailRecord(
            message_id=message_id,
            app_user_id=app_user_id,
            subject=subject,
            sender=sender,
            body_text=body,
            date=datetime(2026, 11, 20, tzinfo=UTC),
            summary=enrichment.summary,
            tags=enrichment.tags,
            embedding=enrichment.embedding,
            enrichment=EnrichmentInfo(model=enricher.model_name),
        )
        for (message_id, subject, sender, body), enrichment in zip(EMAILS, enrichments, strict=True)
    ]
    EmailRepository(client).upsert_many(provider_user_id, records)


def test_status_shows_every_sync_of_a_user_with_status_progress_and_error(firestore_client: firestore.Client):
    account = seed_account(firestore_client, provider_user_id="pu-status", gmail_active=True)
    writer = ProgressWriter(firestore_client)
    common = {"app_user_id": account.app_user_id, "family_id": account.family_id}
    writer.create_pending("s-done", provider_user_id="pu-status", trigger=SyncTrigger.CONNECT, **common)
    writer.start("s-done", mode=SyncMode.BACKFILL, total_estimate=300)
    writer.complete("s-done", emails_processed=300)
    writer.create_pending("s-bad", provider_user_id="pu-status", trigger=SyncTrigger.SCHEDULE, **common)
    writer.start("s-bad", mode=SyncMode.INCREMENTAL)
    writer.fail("s-bad", "Gmail authorization revoked")
    writer.create_pending("s-wait", provider_user_id="pu-status", trigger=SyncTrigger.MANUAL, **common)

    result = runner.invoke(app, ["status", "pu-status"], env={"COLUMNS": "220"})

    assert result.exit_code == 0, result.output
    rows = {line.split("│")[1].strip(): line for line in result.stdout.splitlines() if "│ s-" in line}
    assert set(rows) == {"s-done", "s-bad", "s-wait"}
    assert "completed" in rows["s-done"] and "100%" in rows["s-done"] and "300/300" in rows["s-done"]
    assert "backfill" in rows["s-done"] and "connect" in rows["s-done"]
    assert "failed" in rows["s-bad"] and "Gmail authorization revoked" in rows["s-bad"]
    assert "pending" in rows["s-wait"] and "manual" in rows["s-wait"]


def test_status_of_an_unknown_provider_user_is_a_clear_error(firestore_client: firestore.Client):
    result = runner.invoke(app, ["status", "pu-nobody"])

    assert result.exit_code == EXIT_BAD_INPUT
    assert "unknown provider user 'pu-nobody'" in result.stderr
    assert "Traceback" not in result.output


def test_search_finds_the_release_announcement_first(firestore_client: firestore.Client):
    account = seed_account(firestore_client, provider_user_id="pu-search", gmail_active=True)
    _store_enriched_emails(firestore_client, "pu-search", account.app_user_id)

    result = runner.invoke(
        app,
        ["search", "software release announcement", "--provider-user-id", "pu-search"],
        env={"COLUMNS": "220"},
    )

    assert result.exit_code == 0, result.output
    ranked = [line for line in result.stdout.splitlines() if line.startswith("│ ")]
    assert "Python 3.14.0 final is released" in ranked[0]
    assert "release@python.org" in ranked[0]
    assert len(ranked) == 3


def test_search_for_an_unknown_provider_user_is_a_clear_error(firestore_client: firestore.Client):
    result = runner.invoke(app, ["search", "anything", "--provider-user-id", "pu-nobody"])

    assert result.exit_code == EXIT_BAD_INPUT
    assert "unknown provider user" in result.stderr


def test_sync_of_an_unknown_provider_user_is_a_clear_error(firestore_client: firestore.Client):
    result = runner.invoke(app, ["sync", "pu-nobody"])

    assert result.exit_code == EXIT_BAD_INPUT
    assert "unknown provider user 'pu-nobody'" in result.stderr
