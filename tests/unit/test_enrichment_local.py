"""The offline enrichment backend (MiniLM from the installed package): what each email ends up with."""

from __future__ import annotations

import json
import mailbox
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from emailsync.config import Settings
from emailsync.enrichment import TAXONOMY, Enricher, EnrichmentInput, get_enricher
from emailsync.enrichment.local import LocalEnricher
from emailsync.gmail.mime import parse_message

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLE_MBOX = REPO_ROOT / "samples" / "sample.mbox"

BANK_STATEMENT = EnrichmentInput(
    message_id="bank",
    subject="Your monthly account statement is ready",
    sender="First National Bank <statements@firstnational.example>",
    body_text=(
        "Dear customer,\n\nYour checking account statement for October is now available. "
        "Your closing balance is $2,431.17 after 14 transactions, including a transfer to savings.\n\n"
        "Log in to online banking to view the details.\n"
    ),
)
NEWSLETTER = EnrichmentInput(
    message_id="newsletter",
    subject="The Weekend Gardener #42: tomatoes, compost and more",
    sender="The Weekend Gardener <news@gardener.example>",
    body_text=(
        "This week: how to keep tomatoes happy in late summer, a compost primer and reader photos.\n\n"
        "Thanks for reading!\n\n"
        "You are receiving this because you subscribed. Unsubscribe: https://gardener.example/u/123\n"
    ),
)


@pytest.fixture(scope="session")
def local_enricher() -> LocalEnricher:
    """The MiniLM enricher, loaded once per test session (loading takes seconds)."""
    return LocalEnricher().load()


@pytest.fixture(scope="module")
def sample_inputs() -> list[EnrichmentInput]:
    inputs = []
    for index, message in enumerate(mailbox.mbox(SAMPLE_MBOX)):
        if index >= 40:
            break
        parsed = parse_message(message.as_bytes(), message_id=f"sample-{index:03d}")
        inputs.append(EnrichmentInput.from_email(parsed))
    return inputs


def assert_complete(enrichment, enricher: Enricher) -> None:
    assert 0 < len(enrichment.summary) <= 300
    assert enrichment.tags and len(enrichment.tags) <= 3
    assert set(enrichment.tags) <= set(TAXONOMY)
    assert len(enrichment.embedding) == enricher.dimensions == 384
    assert np.linalg.norm(enrichment.embedding) == pytest.approx(1.0, abs=1e-4)


def test_every_real_sample_email_gets_summary_taxonomy_tags_and_unit_vector_in_input_order(
    local_enricher, sample_inputs
):
    enrichments = local_enricher.enrich(sample_inputs)

    assert [e.message_id for e in enrichments] == [item.message_id for item in sample_inputs]
    for enrichment in enrichments:
        assert_complete(enrichment, local_enricher)
    assert local_enricher.model_name == "local:all-MiniLM-L6-v2:onnx-int8mix"


def test_bank_statement_is_nearer_a_bank_balance_query_than_a_football_query(local_enricher):
    [statement] = local_enricher.enrich([BANK_STATEMENT])
    bank_query = local_enricher.embed_query("bank account balance")
    football_query = local_enricher.embed_query("football match results")

    assert np.dot(statement.embedding, bank_query) > np.dot(statement.embedding, football_query) + 0.1
    assert "finance" in statement.tags


def test_newsletter_with_unsubscribe_footer_is_tagged_newsletter_and_summary_skips_the_footer(local_enricher):
    [enrichment] = local_enricher.enrich([NEWSLETTER])

    assert "newsletter" in enrichment.tags
    assert "tomatoes" in enrichment.summary
    assert "nsubscribe" not in enrichment.summary and "http" not in enrichment.summary


def test_email_with_empty_body_is_summarised_by_its_subject(local_enricher):
    empty = EnrichmentInput(message_id="empty", subject="Dinner on Saturday?", sender="mum@family.example")

    [enrichment] = local_enricher.enrich([empty])

    assert enrichment.summary == "Dinner on Saturday?"
    assert_complete(enrichment, local_enricher)


def test_summary_leaves_out_quoted_text_and_signature(local_enricher):
    reply = EnrichmentInput(
        message_id="reply",
        subject="Re: plumber visit",
        sender="Alex <alex@example.com>",
        body_text=(
            "On Mon, 3 Mar 2025, Sam wrote:\n> Can the plumber come on Tuesday morning?\n> Thanks, Sam\n\n"
            "The plumber confirmed Tuesday at 10am to fix the kitchen sink leak.\n\n"
            "-- \nAlex Example\nSenior Widget Engineer, Example Corp\n"
        ),
    )

    [enrichment] = local_enricher.enrich([reply])

    assert enrichment.summary == "The plumber confirmed Tuesday at 10am to fix the kitchen sink leak."


def test_non_latin_emails_are_summarised_from_their_body(local_enricher):
    items = [
        EnrichmentInput(
            message_id="ru",
            subject="Школа",
            body_text="Привет! Встреча родителей в школе состоится в четверг в 18:00. Пожалуйста, приходите.",
        ),
        EnrichmentInput(
            message_id="ja",
            subject="会議",
            body_text="明日の会議は午後三時からです。会議室は三階の大きい部屋になりますので、よろしくお願いします。",
        ),
    ]

    russian, japanese = local_enricher.enrich(items)

    assert russian.summary.startswith("Встреча родителей в школе")
    assert "会議室は三階" in japanese.summary
    assert_complete(russian, local_enricher)
    assert_complete(japanese, local_enricher)


def test_empty_garbage_and_huge_inputs_do_not_crash_and_still_get_complete_enrichments(local_enricher):
    items = [
        EnrichmentInput(message_id="nothing"),
        EnrichmentInput(message_id="binary", subject="\x00\x01", body_text="\x00\xff\ufffd" * 500),
        EnrichmentInput(message_id="urls", body_text="https://a.example/x\nhttps://b.example/y\n"),
        EnrichmentInput(message_id="huge", subject="Logs", body_text="error at line 42. " * 100_000),
        EnrichmentInput(message_id="one-word", subject="", body_text="ok"),
    ]

    enrichments = local_enricher.enrich(items)

    assert [e.message_id for e in enrichments] == [item.message_id for item in items]
    for enrichment in enrichments:
        assert_complete(enrichment, local_enricher)
    assert local_enricher.enrich([]) == []


def test_get_enricher_without_openai_key_is_the_process_wide_local_backend():
    settings = Settings(openai_api_key=None)
    try:
        enricher = get_enricher(settings)
        assert isinstance(enricher, LocalEnricher)
        assert isinstance(enricher, Enricher)
        assert get_enricher(settings) is enricher
    finally:
        get_enricher.cache_clear()


_OFFLINE_PROBE = """
import json, socket
attempts = []
real_getaddrinfo, real_connect = socket.getaddrinfo, socket.socket.connect

def is_loopback(host):
    return str(host) in ("localhost", "127.0.0.1", "::1") or str(host).startswith("/")

def guarded_getaddrinfo(host, *args, **kwargs):
    if not is_loopback(host):
        attempts.append(str(host))
        raise OSError("network disabled by test")
    return real_getaddrinfo(host, *args, **kwargs)

def guarded_connect(sock, address):
    host = address[0] if isinstance(address, tuple) else address
    if not is_loopback(host):
        attempts.append(str(host))
        raise OSError("network disabled by test")
    return real_connect(sock, address)

socket.getaddrinfo = guarded_getaddrinfo
socket.socket.connect = guarded_connect

import os
from emailsync.enrichment import EnrichmentInput
from emailsync.enrichment.local import LocalEnricher
item = EnrichmentInput(message_id="m", subject="Hello", body_text="Hi there, all good.")
[result] = LocalEnricher().enrich([item])
print(json.dumps({"attempts": attempts, "dimensions": len(result.embedding),
                  "hf_offline": os.environ.get("HF_HUB_OFFLINE")}))
"""


def test_local_backend_loads_and_enriches_with_the_network_disabled():
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    completed = subprocess.run(
        [sys.executable, "-c", _OFFLINE_PROBE],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert completed.returncode == 0, completed.stderr[-2000:]
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    assert report == {"attempts": [], "dimensions": 384, "hf_offline": "1"}
