"""Local enrichment: ONNX Runtime vs torch on the same texts, cold start, and tag quality.

Enriches 1,000 real messages (samples/sample.mbox, topped up from ../shared/corpus when present) in
batches of EMAILSYNC_BATCH_SIZE's default (100), end to end through `enrich()` with both local
backends, batch by batch in turn so other load on this shared machine hits both alike. Reports
messages/s per backend and their ratio (also from CPU time, which other load disturbs less), the
cosine between the two backends' embeddings of each message, the cold start of a fresh process
(start to first batch enriched, median of three) and spam/newsletter precision/recall on the held-out split of
bench/tag_eval before (zero-shot) and after (learned heads); that part skips without the corpus.
Run just this one with `python -m bench.run enrichment`.
"""

from __future__ import annotations

import mailbox
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

from emailsync.config import DEFAULT_ONNX_PRECISION, Settings
from emailsync.enrichment import TAXONOMY, EnrichmentInput
from emailsync.enrichment.local import LocalEnricher, usable_cpu_count

REPO_ROOT = Path(__file__).resolve().parent.parent
SAMPLE_MBOX = REPO_ROOT / "samples" / "sample.mbox"
CORPUS_DIR = Path(os.environ.get("EMAILSYNC_BENCH_CORPUS") or REPO_ROOT.parent / "shared" / "corpus")
MESSAGES = 1000
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


def _interleaved_rates(
    enrichers: dict[str, LocalEnricher], inputs: list[EnrichmentInput]
) -> tuple[dict[str, float], dict[str, float], dict[str, list]]:
    """msg/s per backend (wall and CPU-time based), batch by batch in turn so load hits all alike."""
    wall = dict.fromkeys(enrichers, 0.0)
    cpu = dict.fromkeys(enrichers, 0.0)
    results: dict[str, list] = {name: [] for name in enrichers}
    for start in range(0, len(inputs), BATCH_SIZE):
        batch = inputs[start : start + BATCH_SIZE]
        for name, enricher in enrichers.items():
            began_wall, began_cpu = time.perf_counter(), time.process_time()
            results[name] += enricher.enrich(batch)
            wall[name] += time.perf_counter() - began_wall
            cpu[name] += time.process_time() - began_cpu
    cores = usable_cpu_count()
    rates = {name: len(inputs) / seconds for name, seconds in wall.items()}
    # CPU seconds spread over all cores: the rate this run would have had on otherwise idle cores.
    idle_rates = {name: len(inputs) / (seconds / cores) for name, seconds in cpu.items()}
    return rates, idle_rates, results


_COLD_START = """
import json, sys, time
began = time.perf_counter()
from emailsync.config import Settings
from emailsync.enrichment import EnrichmentInput, get_enricher
imported = time.perf_counter()
with open({inputs!r}) as handle:
    items = [EnrichmentInput.model_validate(item) for item in json.load(handle)]
prepared = time.perf_counter()
get_enricher(Settings(local_backend={backend!r})).enrich(items)
done, done_epoch = time.perf_counter(), time.time()
print(json.dumps({{"imports": imported - began, "inputs": prepared - imported, "enrich": done - prepared,
                  "done_epoch": done_epoch, "torch": "torch" in sys.modules}}))
"""


def cold_start_seconds(backend: str, items: list[EnrichmentInput], runs: int = 1) -> dict[str, object]:
    """Process start to first batch enriched, in a fresh interpreter: its start, imports, the model
    load and the first `enrich()` of one sync batch (not the process's exit). The batch arrives as
    parsed messages (JSON), as a worker has them from the fetch; parsing MIME is the sync's work, not
    the enricher's. The median of `runs`."""
    import json
    import tempfile

    env = {key: value for key, value in os.environ.items() if key != "OPENAI_API_KEY"}
    samples: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory() as directory:
        inputs = Path(directory) / "batch.json"
        inputs.write_text(json.dumps([item.model_dump(mode="json") for item in items]))
        for _ in range(runs):
            spawned = time.time()  # the child reports the wall clock too: its exit is not counted
            completed = subprocess.run(
                [sys.executable, "-c", _COLD_START.format(inputs=str(inputs), backend=backend)],
                cwd=REPO_ROOT,
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            child = json.loads(completed.stdout.strip().splitlines()[-1])
            samples.append({"total": child["done_epoch"] - spawned, **child})
    samples.sort(key=lambda sample: sample["total"])
    median = samples[len(samples) // 2]
    return {
        "process_start_to_first_batch_seconds": round(median["total"], 2),
        "imports_seconds": round(median["imports"], 2),
        "first_batch_enrich_seconds_including_model_load": round(median["enrich"], 2),
        "batch_messages": len(items),
        "runs_process_start_to_first_batch_seconds": [round(sample["total"], 2) for sample in samples],
        "torch_imported": bool(median["torch"]),
    }


def _precision_recall(predicted: list[bool], actual: list[bool]) -> dict[str, object]:
    tp = sum(p and a for p, a in zip(predicted, actual, strict=True))
    return {
        "precision": round(tp / max(sum(predicted), 1), 3),
        "recall": round(tp / max(sum(actual), 1), 3),
        "predicted": sum(predicted),
        "actual": sum(actual),
    }


def tag_quality(after: LocalEnricher) -> dict[str, object]:
    """Spam and newsletter precision/recall on the held-out split of bench/tag_eval, before and after."""
    from bench.tag_eval import dataset

    examples = dataset.load()
    if examples is None:
        return {"skipped": f"corpus not found at {dataset.CORPUS_MBOX}"}
    test = [example for example in examples if example.split == "test"]
    before = LocalEnricher(backend="onnx", tag_heads=False)
    figures: dict[str, object] = {"held_out_messages": len(test), "labels": "bench/tag_eval/labels.csv"}
    for label, enricher in (("before_zero_shot", before), ("after_heads", after)):
        tags = [result.tags for result in enricher.enrich([example.item for example in test])]
        per_tag = {
            tag: _precision_recall([tag in row for row in tags], [getattr(e, tag) for e in test])
            for tag in ("spam", "newsletter")
        }
        lists = [example for example, row in zip(test, tags, strict=True) if example.mailing_list]
        discussion = [e for e in lists if not e.newsletter and not e.spam]
        list_rows = [row for e, row in zip(test, tags, strict=True) if e in discussion]
        per_tag["mailing_list_discussion_tagged_newsletter"] = {
            "messages": len(discussion),
            "tagged_newsletter": sum("newsletter" in row for row in list_rows),
        }
        figures[label] = per_tag
    return figures


def onnx_recipe() -> dict[str, object]:
    """The default ONNX file's manifest: precision, recipe, fusion statistics."""
    import json

    from emailsync.enrichment.onnx_export import manifest_path, onnx_model_path

    manifest = json.loads(manifest_path(onnx_model_path(precision=DEFAULT_ONNX_PRECISION)).read_text())
    keep = ("precision", "opset", "fused", "quantized_ops", "fp32_nodes", "fusions")
    return {key: manifest[key] for key in keep if key in manifest}


def run() -> dict[str, object]:
    load_at_start = [round(value, 2) for value in os.getloadavg()]
    inputs = load_inputs()
    load_seconds = {}
    enrichers: dict[str, LocalEnricher] = {}
    # onnx is the default graph (DEFAULT_ONNX_PRECISION), onnx_fp32 the opt-in exact one
    # (EMAILSYNC_ONNX_PRECISION=fp32). Each runtime batches its own way: torch through
    # sentence-transformers (sorted by characters, batches of 32), ONNX sorted by token count in small
    # batches run side by side, one core each.
    configurations = {
        "onnx": Settings(local_backend="onnx"),
        "onnx_fp32": Settings(local_backend="onnx", local_onnx_precision="fp32"),
        "torch": Settings(local_backend="torch"),
    }
    for name, settings in configurations.items():
        started = time.perf_counter()
        enrichers[name] = LocalEnricher(settings=settings).load()
        load_seconds[name] = round(time.perf_counter() - started, 2)
    for enricher in enrichers.values():
        enricher.enrich(inputs[:8])  # first-call overheads (allocator, lazy kernels) are not steady state

    rates, idle_rates, results = _interleaved_rates(enrichers, inputs)
    vectors = {
        name: np.array([r.embedding for r in rows], dtype=np.float32) for name, rows in results.items()
    }

    def cosine_to_torch(name: str) -> dict[str, float]:
        cosines = np.sum(vectors[name] * vectors["torch"], axis=1)
        return {
            "mean": round(float(cosines.mean()), 6),
            "p5": round(float(np.percentile(cosines, 5)), 6),
            "min": round(float(cosines.min()), 6),
        }

    onnx = enrichers["onnx"]
    began = time.perf_counter()
    for _ in range(20):
        onnx.embed_query("bank account balance")
    query_ms = (time.perf_counter() - began) / 20 * 1000

    tag_counts = Counter(tag for result in results["onnx"] for tag in result.tags)
    figures: dict[str, object] = {
        "backends": {name: enricher.model_name for name, enricher in enrichers.items()},
        "messages": len(inputs),
        "batch_size": BATCH_SIZE,
        "cores": usable_cpu_count(),
        "load_average_at_start": load_at_start,
        "model_load_seconds": load_seconds,
        "messages_per_second": {name: round(rate, 1) for name, rate in rates.items()},
        "onnx_to_torch_speedup": round(rates["onnx"] / rates["torch"], 2),
        "speedup_to_torch": {name: round(rate / rates["torch"], 2) for name, rate in rates.items()},
        "messages_per_second_from_cpu_time": {name: round(rate, 1) for name, rate in idle_rates.items()},
        "onnx_to_torch_speedup_from_cpu_time": round(idle_rates["onnx"] / idle_rates["torch"], 2),
        "speedup_to_torch_from_cpu_time": {
            name: round(rate / idle_rates["torch"], 2) for name, rate in idle_rates.items()
        },
        "goal_messages_per_second": GOAL_MESSAGES_PER_SECOND,
        "onnx_ratio_to_goal": round(rates["onnx"] / GOAL_MESSAGES_PER_SECOND, 2),
        "cosine_onnx_vs_torch": cosine_to_torch("onnx"),
        "cosine_vs_torch": {name: cosine_to_torch(name) for name in enrichers if name != "torch"},
        "onnx_model_recipe": onnx_recipe(),
        "goals": {
            "onnx_to_torch_speedup": ">= 3",
            "cosine_onnx_vs_torch": "mean >= 0.99, p5 >= 0.98",
            "cold_start_process_start_to_first_batch_seconds": "<= 2",
        },
        "cold_start": {
            "onnx": cold_start_seconds("onnx", inputs[:BATCH_SIZE], runs=3),
            "torch": cold_start_seconds("torch", inputs[:BATCH_SIZE]),
        },
        "embed_query_ms_onnx": round(query_ms, 1),
        "mean_summary_chars": round(sum(len(r.summary) for r in results["onnx"]) / len(inputs), 1),
        "mean_tags_per_message": round(sum(len(r.tags) for r in results["onnx"]) / len(inputs), 2),
        "tags_used": f"{len(tag_counts)}/{len(TAXONOMY)}",
        "tag_counts": dict(tag_counts.most_common()),
        "tag_quality": tag_quality(onnx),
    }
    figures["load_average_at_end"] = [round(value, 2) for value in os.getloadavg()]
    return figures


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
