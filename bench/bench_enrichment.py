"""Local enrichment throughput: can `LocalEnricher.enrich()` keep pace with Gmail's 50 messages/s?

Enriches ~500 real messages (samples/sample.mbox, topped up from ../shared/corpus when present) in
batches of EMAILSYNC_BATCH_SIZE's default (100), end to end through `enrich()`: body cleaning,
one model call per batch, summaries and tags. Reports the model load time, messages/s and the ratio
to the 50 messages/s goal, all measured in this one run. The machine is shared and noisy, so two
figures are robust to other load: the rate implied by CPU time (CPU seconds spread over the cores)
and the ratio of enrich() to the bare model call on the same texts, measured interleaved.
"""

from __future__ import annotations

import mailbox
import os
import statistics
import time
from collections import Counter
from pathlib import Path

from emailsync.enrichment import TAXONOMY, EnrichmentInput
from emailsync.enrichment.local import load_sentence_model, usable_cpu_count

REPO_ROOT = Path(__file__).resolve().parent.parent
SAMPLE_MBOX = REPO_ROOT / "samples" / "sample.mbox"
CORPUS_DIR = REPO_ROOT.parent / "shared" / "corpus"
MESSAGES = 500
BATCH_SIZE = 100
GOAL_MESSAGES_PER_SECOND = 50.0


def _mbox_paths() -> list[Path]:
    paths = [SAMPLE_MBOX]
    if CORPUS_DIR.is_dir():
        paths += sorted(CORPUS_DIR.glob("*.mbox"))
    return paths


def load_inputs(limit: int = MESSAGES) -> list[EnrichmentInput]:
    """Real messages parsed the way the sync parses them (emailsync.gmail.mime.parse_message)."""
    from emailsync.gmail.mime import parse_message

    inputs: list[EnrichmentInput] = []
    seen: set[bytes] = set()
    for path in _mbox_paths():
        for index, message in enumerate(mailbox.mbox(path)):
            raw = message.as_bytes()
            if raw in seen:  # the sample is a subset of the corpus
                continue
            seen.add(raw)
            parsed = parse_message(raw, message_id=f"{path.stem}-{index:05d}")
            inputs.append(EnrichmentInput.from_email(parsed))
            if len(inputs) >= limit:
                return inputs
    # No corpus here: repeat the sample under new ids to reach `limit`.
    originals = list(inputs)
    while len(inputs) < limit:
        source = originals[len(inputs) % len(originals)]
        inputs.append(source.model_copy(update={"message_id": f"{source.message_id}-r{len(inputs)}"}))
    return inputs


def run() -> dict[str, object]:
    from emailsync.enrichment.local import EMBEDDING_TEXT_CHARS, ENCODE_BATCH_SIZE, LocalEnricher
    from emailsync.enrichment.text import bodies_and_embedding_texts

    inputs = load_inputs()
    started = time.perf_counter()
    enricher = LocalEnricher().load()
    load_seconds = time.perf_counter() - started
    model = load_sentence_model()

    enricher.enrich(inputs[:8])  # first-call overheads (allocator, lazy kernels) are not steady state
    # Interleaved per batch, so load from other processes hits both measurements alike: the full
    # enrich() path, and the bare model call on the same embedding texts (the floor we cannot beat).
    enrich_wall = enrich_cpu = encode_wall = 0.0
    batch_rates: list[float] = []
    results = []
    for start in range(0, len(inputs), BATCH_SIZE):
        batch = inputs[start : start + BATCH_SIZE]
        wall, cpu = time.perf_counter(), time.process_time()
        results += enricher.enrich(batch)
        batch_wall = time.perf_counter() - wall
        enrich_wall += batch_wall
        enrich_cpu += time.process_time() - cpu
        batch_rates.append(len(batch) / batch_wall)

        _bodies, texts = bodies_and_embedding_texts(batch, EMBEDDING_TEXT_CHARS)
        wall = time.perf_counter()
        model.encode(texts, batch_size=ENCODE_BATCH_SIZE, normalize_embeddings=True, show_progress_bar=False)
        encode_wall += time.perf_counter() - wall

    rate = len(inputs) / enrich_wall
    cores = usable_cpu_count()
    # CPU seconds spread over all cores: the rate this run would have had on otherwise idle cores.
    idle_rate = len(inputs) / (enrich_cpu / cores)

    began = time.perf_counter()
    for _ in range(20):
        enricher.embed_query("bank account balance")
    query_ms = (time.perf_counter() - began) / 20 * 1000

    tag_counts = Counter(tag for result in results for tag in result.tags)
    return {
        "backend": enricher.model_name,
        "messages": len(inputs),
        "batch_size": BATCH_SIZE,
        "cores": cores,
        "load_average_1m": round(os.getloadavg()[0], 2),
        "model_load_seconds": round(load_seconds, 2),
        "enrich_seconds": round(enrich_wall, 2),
        "messages_per_second": round(rate, 1),
        "goal_messages_per_second": GOAL_MESSAGES_PER_SECOND,
        "ratio_to_goal": round(rate / GOAL_MESSAGES_PER_SECOND, 2),
        "messages_per_second_from_cpu_time": round(idle_rate, 1),
        "ratio_to_goal_from_cpu_time": round(idle_rate / GOAL_MESSAGES_PER_SECOND, 2),
        "model_only_messages_per_second": round(len(inputs) / encode_wall, 1),
        "enrich_to_model_only_ratio": round(encode_wall / enrich_wall, 2),
        # The least disturbed batch is the closest this run gets to the machine's uncontended speed.
        "best_batch_messages_per_second": round(max(batch_rates), 1),
        "median_batch_messages_per_second": round(statistics.median(batch_rates), 1),
        "embed_query_ms": round(query_ms, 1),
        "mean_summary_chars": round(sum(len(r.summary) for r in results) / len(results), 1),
        "mean_tags_per_message": round(sum(len(r.tags) for r in results) / len(results), 2),
        "tags_used": f"{len(tag_counts)}/{len(TAXONOMY)}",
        "tag_counts": dict(tag_counts.most_common()),
    }


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
