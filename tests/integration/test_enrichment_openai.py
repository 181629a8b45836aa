"""The OpenAI enrichment backend, through the real `openai` client over HTTP to a local fake API."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from emailsync.config import Settings
from emailsync.enrichment import TAXONOMY, EnrichmentInput, get_enricher
from emailsync.enrichment.openai_backend import OpenAIEnricher
from emailsync.errors import FatalError
from tests.fakes.openai_server import CHAT_PATH, EMBEDDINGS_PATH, OpenAICompatibleServer

pytestmark = pytest.mark.integration

API_KEY = "sk-test-not-a-secret"


@pytest.fixture(scope="module")
def openai_server() -> Iterator[OpenAICompatibleServer]:
    with OpenAICompatibleServer(api_key=API_KEY) as server:
        yield server


@pytest.fixture
def server(openai_server: OpenAICompatibleServer) -> OpenAICompatibleServer:
    openai_server.reset()
    return openai_server


class RecordingSleep:
    """Stands in for time.sleep: records the waits the retry loop asks for, without waiting."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def make_enricher(
    server: OpenAICompatibleServer, sleep: RecordingSleep, api_key: str = API_KEY
) -> OpenAIEnricher:
    settings = Settings(openai_api_key=api_key, openai_base_url=server.base_url)
    return OpenAIEnricher(settings, sleep=sleep)


def household_emails(count: int) -> list[EnrichmentInput]:
    bodies = [
        "Your electricity bill of $84.20 is due on March 3. Pay online to avoid a late fee.",
        "Your flight to Lisbon is confirmed. Boarding starts at 9:40, gate B12. Have a nice travel!",
        "The school trip is on Friday; please sign the permission slip for your child.",
        "This week's picks from our newsletter. Click the link below to unsubscribe at any time.",
    ]
    return [
        EnrichmentInput(
            message_id=f"msg-{index:03d}",
            subject=f"Household email {index}",
            sender="Sender <sender@example.com>",
            body_text=bodies[index % len(bodies)],
        )
        for index in range(count)
    ]


def test_openai_enrichment_gives_summary_taxonomy_tags_and_unit_384_vector_per_email_in_order(server):
    sleep = RecordingSleep()
    enricher = make_enricher(server, sleep)
    items = household_emails(6)

    enrichments = enricher.enrich(items)

    assert enricher.model_name == "openai:gpt-4o-mini+text-embedding-3-small"
    assert enricher.dimensions == 384
    assert [e.message_id for e in enrichments] == [item.message_id for item in items]
    for enrichment in enrichments:
        assert 0 < len(enrichment.summary) <= 300
        assert enrichment.tags and set(enrichment.tags) <= set(TAXONOMY)
        assert len(enrichment.embedding) == 384
        assert np.linalg.norm(enrichment.embedding) == pytest.approx(1.0, abs=1e-6)
    assert "bills" in enrichments[0].tags
    assert "newsletter" in enrichments[3].tags
    query = enricher.embed_query("when is the electricity bill due?")
    assert len(query) == 384 and np.linalg.norm(query) == pytest.approx(1.0, abs=1e-6)
    chat_request = server.requests_to(CHAT_PATH)[0]
    assert chat_request["response_format"]["json_schema"]["strict"] is True
    assert chat_request["response_format"]["json_schema"]["schema"]["properties"]["tags"]["items"][
        "enum"
    ] == (TAXONOMY)
    assert sleep.waits == []


def test_a_batch_makes_one_embeddings_request_and_one_chat_request_per_email(server):
    enricher = make_enricher(server, RecordingSleep())
    items = household_emails(12)

    enricher.enrich(items)

    embedding_requests = server.requests_to(EMBEDDINGS_PATH)
    assert len(embedding_requests) == 1
    assert len(embedding_requests[0]["input"]) == 12
    assert embedding_requests[0]["dimensions"] == 384
    assert embedding_requests[0]["model"] == "text-embedding-3-small"
    assert server.calls[CHAT_PATH] == 12


def test_long_bodies_are_truncated_before_they_are_sent(server):
    enricher = make_enricher(server, RecordingSleep())
    huge = EnrichmentInput(message_id="huge", subject="Big", sender="a@b.c", body_text="word " * 200_000)

    [enrichment] = enricher.enrich([huge])

    assert len(server.requests_to(CHAT_PATH)[0]["messages"][1]["content"]) < 10_000
    assert len(server.requests_to(EMBEDDINGS_PATH)[0]["input"][0]) < 10_000
    assert len(enrichment.summary) <= 300


def test_rate_limited_chat_request_is_retried_after_the_servers_retry_after_then_succeeds(server):
    sleep = RecordingSleep()
    enricher = make_enricher(server, sleep)
    server.fail_next(CHAT_PATH, 429, headers={"Retry-After": "2"})
    server.fail_next(EMBEDDINGS_PATH, 503)

    enrichments = enricher.enrich(household_emails(1))

    assert enrichments[0].summary and enrichments[0].tags
    assert server.calls[CHAT_PATH] == 2
    assert server.calls[EMBEDDINGS_PATH] == 2
    assert 2.0 in sleep.waits  # the server's Retry-After, not our own backoff
    assert len(sleep.waits) == 2


def test_invalid_api_key_fails_fatally_without_any_retry(server):
    sleep = RecordingSleep()
    enricher = make_enricher(server, sleep, api_key="sk-revoked")
    items = household_emails(3)

    with pytest.raises(FatalError, match="401"):
        enricher.enrich(items)

    assert sleep.waits == []
    assert server.calls[CHAT_PATH] <= len(items)
    assert server.calls[EMBEDDINGS_PATH] <= 1


def test_get_enricher_uses_openai_when_an_api_key_is_configured_and_caches_it(server):
    settings = Settings(openai_api_key=API_KEY, openai_base_url=server.base_url)
    try:
        enricher = get_enricher(settings)
        assert isinstance(enricher, OpenAIEnricher)
        assert get_enricher(settings) is enricher
    finally:
        get_enricher.cache_clear()
