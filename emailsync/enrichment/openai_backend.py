"""Enrichment through the OpenAI API: structured-output chat for summary + tags, batched embeddings.

The client's own retries are off (`max_retries=0`): every failure goes through emailsync/errors.py's
classification and this module's one retry loop, which honours the server's Retry-After.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np
import openai
from pydantic import BaseModel, ValidationError

from emailsync.config import Settings
from emailsync.enrichment.base import MAX_TAGS, SUMMARY_MAX_CHARS, Enrichment, EnrichmentInput
from emailsync.enrichment.taxonomy import TAG_DESCRIPTIONS, TAXONOMY, rule_tags
from emailsync.enrichment.text import (
    bodies_and_embedding_texts,
    extractive_summaries,
    prompt_body,
    truncate,
)
from emailsync.errors import (
    OPENAI_ERROR_MAPPING,
    FatalError,
    RetriableError,
    is_retriable,
    parse_retry_after,
    resolve_http_error,
)

logger = logging.getLogger(__name__)

CHAT_CONCURRENCY = 8
MAX_ATTEMPTS = 5
BACKOFF_BASE_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 30.0
# A longer Retry-After is not waited out inside a batch: the error goes up with it, for the task to retry.
MAX_RETRY_AFTER_SECONDS = 60.0
REQUEST_TIMEOUT_SECONDS = 60.0
# ~1,500 tokens of body is plenty to summarise an email and keeps cost and latency bounded.
CHAT_BODY_CHARS = 6000
# text-embedding-3 accepts 8k tokens; the start of a message says what it is about.
EMBEDDING_TEXT_CHARS = 4000
# The embeddings endpoint takes at most 2,048 inputs per request.
EMBEDDING_REQUEST_MAX_INPUTS = 2048

SYSTEM_PROMPT = (
    "You enrich emails for a household assistant. For the email given, answer with a JSON object:\n"
    f"- summary: one or two plain sentences (at most {SUMMARY_MAX_CHARS} characters) saying what the "
    "email is about and any action or date that matters.\n"
    f"- tags: 1 to {MAX_TAGS} tags from this list, most relevant first:\n"
    + "\n".join(f"  {tag}: {description}" for tag, description in TAG_DESCRIPTIONS.items())
)

ENRICHMENT_SCHEMA: dict[str, object] = {
    "type": "object",
    "properties": {
        "summary": {"type": "string", "description": f"At most {SUMMARY_MAX_CHARS} characters."},
        "tags": {"type": "array", "items": {"type": "string", "enum": TAXONOMY}},
    },
    "required": ["summary", "tags"],
    "additionalProperties": False,
}
RESPONSE_FORMAT: dict[str, object] = {
    "type": "json_schema",
    "json_schema": {"name": "email_enrichment", "strict": True, "schema": ENRICHMENT_SCHEMA},
}

T = TypeVar("T")


class _ChatAnswer(BaseModel):
    summary: str
    tags: list[str]


def _retry_after_seconds(exc: openai.APIStatusError) -> float | None:
    """Seconds from `retry-after-ms` or `Retry-After` (seconds or an HTTP date), if the server sent one."""
    headers = exc.response.headers
    if "retry-after-ms" in headers:
        try:
            return max(float(headers["retry-after-ms"]) / 1000.0, 0.0)
        except (TypeError, ValueError):
            return None
    return parse_retry_after(headers.get("retry-after"))


def classify_openai_error(exc: Exception) -> Exception:
    """The emailsync error for an OpenAI client error (emailsync/errors.py is the one classification)."""
    if isinstance(exc, openai.APITimeoutError | openai.APIConnectionError):
        return RetriableError(f"OpenAI unreachable: {exc}")
    if isinstance(exc, openai.APIStatusError):
        resolution = resolve_http_error(OPENAI_ERROR_MAPPING, exc.status_code)
        return resolution.error(
            f"OpenAI {exc.status_code}: {exc.message}",
            status=exc.status_code,
            retry_after=_retry_after_seconds(exc),
        )
    return exc


class OpenAIEnricher:
    """The OpenAI `Enricher`. One client per enricher (it pools connections and is thread-safe)."""

    def __init__(self, settings: Settings, *, sleep: Callable[[float], None] = time.sleep) -> None:
        if not settings.openai_api_key:
            raise FatalError("OpenAI enrichment needs OPENAI_API_KEY")
        self.model_name = f"openai:{settings.openai_chat_model}+{settings.openai_embedding_model}"
        self.dimensions = settings.embedding_dimensions
        self._chat_model = settings.openai_chat_model
        self._embedding_model = settings.openai_embedding_model
        self._sleep = sleep  # injectable so tests can see the waits without waiting
        self._client = openai.OpenAI(
            api_key=settings.openai_api_key,
            base_url=settings.openai_base_url,
            max_retries=0,
            timeout=REQUEST_TIMEOUT_SECONDS,
        )

    def enrich(self, items: list[EnrichmentInput]) -> list[Enrichment]:
        if not items:
            return []
        bodies, texts = bodies_and_embedding_texts(items, EMBEDDING_TEXT_CHARS)
        pool = ThreadPoolExecutor(max_workers=CHAT_CONCURRENCY, thread_name_prefix="openai-chat")
        try:
            pending = pool.map(self._summarise_and_tag, items, bodies)
            vectors = self._embed(texts)  # runs while the chat requests are in flight
            answers = list(pending)
        finally:
            # After a fatal error (say a revoked key) the queued requests are pointless: drop them.
            pool.shutdown(wait=True, cancel_futures=True)
        return [
            Enrichment(message_id=item.message_id, summary=answer.summary, tags=answer.tags, embedding=vector)
            for item, answer, vector in zip(items, answers, vectors, strict=True)
        ]

    def embed_query(self, text: str) -> list[float]:
        return self._embed([text.strip() or "(empty query)"])[0]

    def _embed(self, texts: list[str]) -> list[list[float]]:
        vectors: list[list[float]] = []
        for start in range(0, len(texts), EMBEDDING_REQUEST_MAX_INPUTS):
            chunk = texts[start : start + EMBEDDING_REQUEST_MAX_INPUTS]
            response = self._with_retries(
                lambda chunk=chunk: self._client.embeddings.create(
                    model=self._embedding_model,
                    input=chunk,
                    dimensions=self.dimensions,
                    encoding_format="float",
                )
            )
            by_index = sorted(response.data, key=lambda item: item.index)
            if len(by_index) != len(chunk):
                raise RetriableError(f"OpenAI returned {len(by_index)} embeddings for {len(chunk)} inputs")
            for item in by_index:
                vector = np.asarray(item.embedding, dtype=np.float64)
                if vector.shape != (self.dimensions,):
                    raise FatalError(
                        f"OpenAI returned a {vector.shape} embedding, expected {self.dimensions}"
                    )
                norm = float(np.linalg.norm(vector))
                # Unit norm so cosine distance in Firestore's vector search matches the local backend.
                vectors.append((vector / norm if norm > 0 else vector).tolist())
        return vectors

    def _summarise_and_tag(self, item: EnrichmentInput, paragraphs: list[str]) -> _ChatAnswer:
        body = prompt_body(item.body_text, CHAT_BODY_CHARS) or "(no body)"
        user_message = f"Subject: {item.subject or '(no subject)'}\nFrom: {item.sender}\n\n{body}"

        def request() -> _ChatAnswer:
            completion = self._client.chat.completions.create(
                model=self._chat_model,
                messages=[
                    {"role": "system", "content": SYSTEM_PROMPT},
                    {"role": "user", "content": user_message},
                ],
                response_format=RESPONSE_FORMAT,  # type: ignore[arg-type]
                temperature=0,
                max_tokens=300,
            )
            message = completion.choices[0].message
            if message.refusal:
                # Deterministic: asking again gets the same refusal, so fall back to what we can do here.
                logger.warning("OpenAI refused to enrich message %s", item.message_id)
                return self._fallback_answer(item, paragraphs)
            try:
                answer = _ChatAnswer.model_validate(json.loads(message.content or ""))
            except (json.JSONDecodeError, ValidationError) as exc:
                raise RetriableError(f"OpenAI answer for {item.message_id} is not the schema: {exc}") from exc
            tags = [tag for tag in dict.fromkeys(answer.tags) if tag in TAG_DESCRIPTIONS][:MAX_TAGS]
            summary = truncate(answer.summary, SUMMARY_MAX_CHARS) or truncate(item.subject, SUMMARY_MAX_CHARS)
            return _ChatAnswer(summary=summary or "(no subject)", tags=tags or rule_tags(item.subject, body))

        return self._with_retries(request)

    @staticmethod
    def _fallback_answer(item: EnrichmentInput, paragraphs: list[str]) -> _ChatAnswer:
        summary = extractive_summaries([item.subject], [paragraphs])[0]
        return _ChatAnswer(summary=summary, tags=rule_tags(item.subject, item.body_text))

    def _with_retries(self, call: Callable[[], T]) -> T:
        """`call()` retried on retriable errors with exponential backoff, or the server's Retry-After."""
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                return call()
            except (openai.OpenAIError, RetriableError) as exc:
                error = classify_openai_error(exc) if isinstance(exc, openai.OpenAIError) else exc
                retry_after = error.retry_after if isinstance(error, RetriableError) else None
                waits_too_long = retry_after is not None and retry_after > MAX_RETRY_AFTER_SECONDS
                if not is_retriable(error) or attempt == MAX_ATTEMPTS or waits_too_long:
                    if error is exc:
                        raise
                    raise error from exc
                delay = (
                    retry_after
                    if retry_after is not None
                    else min(BACKOFF_MAX_SECONDS, BACKOFF_BASE_SECONDS * 2 ** (attempt - 1))
                    * random.uniform(0.5, 1.0)
                )
                logger.info("OpenAI attempt %d failed (%s), retrying in %.2f s", attempt, error, delay)
                self._sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover
