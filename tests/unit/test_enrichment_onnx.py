"""The ONNX Runtime backend of the local model: same embeddings as torch, no torch in the process."""

from __future__ import annotations

import json
import mailbox
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from emailsync.config import Settings
from emailsync.enrichment import EnrichmentInput
from emailsync.enrichment.compat import compatible
from emailsync.enrichment.local import (
    EMBEDDING_TEXT_CHARS,
    ENCODE_BATCH_SIZE,
    MAX_SEQ_LENGTH,
    LocalEnricher,
    TorchSentenceEncoder,
)
from emailsync.enrichment.onnx_backend import OnnxSentenceEncoder
from emailsync.enrichment.onnx_export import is_valid, manifest_path, onnx_model_path
from emailsync.enrichment.text import bodies_and_embedding_texts
from emailsync.errors import FatalError
from emailsync.gmail.mime import parse_message
from emailsync.models import EmailRecord, EnrichmentInfo

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLE_MBOX = REPO_ROOT / "samples" / "sample.mbox"


@pytest.fixture(scope="module")
def sample_texts() -> list[str]:
    items = [
        EnrichmentInput.from_email(parse_message(message.as_bytes(), message_id=f"sample-{index:03d}"))
        for index, message in enumerate(mailbox.mbox(SAMPLE_MBOX))
    ]
    return bodies_and_embedding_texts(items, EMBEDDING_TEXT_CHARS)[1]


@pytest.fixture
def model_copy(tmp_path: Path) -> Path:
    """A private copy of the exported model and its manifest, free to damage."""
    source = onnx_model_path()
    target = tmp_path / source.name
    shutil.copyfile(source, target)
    shutil.copyfile(manifest_path(source), manifest_path(target))
    return target


def _encoder(model_path: Path, *, can_rebuild: bool) -> OnnxSentenceEncoder:
    return OnnxSentenceEncoder(
        max_seq_length=MAX_SEQ_LENGTH,
        batch_size=ENCODE_BATCH_SIZE,
        threads=1,
        model_path=model_path,
        precision="fp32",  # model_copy is the fp32 export
        can_rebuild=can_rebuild,
    )


def _disable_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to open a connection fails, as on a machine without network."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture
def network_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    _disable_network(monkeypatch)


@pytest.fixture(scope="module")
def torch_vectors_of(sample_texts) -> Callable[[int], np.ndarray]:
    """Sample mailbox texts embedded by the torch runtime, offline (once per subset for both ONNX
    precisions): `torch_vectors_of(stride)` embeds every `stride`-th text."""
    vectors: dict[int, np.ndarray] = {}

    def of(stride: int) -> np.ndarray:
        if stride not in vectors:
            with pytest.MonkeyPatch.context() as monkeypatch:
                _disable_network(monkeypatch)
                vectors[stride] = TorchSentenceEncoder().encode(sample_texts[::stride])
        return vectors[stride]

    return of


# The suite compares every 4th message of the sample mailbox (75, spread over all of it); `make soak`
# compares every message (three encoder passes over all 300 are the largest item of the suite).
@pytest.mark.parametrize("precision", ["int8mix", "fp32"])
@pytest.mark.parametrize(
    "messages",
    [pytest.param(75, id="75-messages"), pytest.param(300, id="300-messages", marks=pytest.mark.soak)],
)
def test_onnx_and_torch_embed_the_sample_mailbox_messages_to_within_cosine_0_98_offline(
    sample_texts, torch_vectors_of, network_disabled, precision, messages
):
    stride = len(sample_texts) // messages
    texts = sample_texts[::stride]
    onnx = LocalEnricher(settings=Settings(local_backend="onnx", local_onnx_precision=precision))
    onnx_vectors = onnx._encoder.encode(texts)
    torch_vectors = torch_vectors_of(stride)

    cosines = np.sum(onnx_vectors * torch_vectors, axis=1)
    assert len(sample_texts) == 300
    assert len(cosines) == messages
    assert cosines.min() >= 0.98
    assert cosines.mean() >= 0.99
    assert np.linalg.norm(onnx_vectors, axis=1) == pytest.approx(np.ones(len(texts)), abs=1e-4)


_NO_TORCH_PROBE = """
import json, sys
from emailsync.config import Settings
from emailsync.enrichment import EnrichmentInput, get_enricher
enricher = get_enricher(Settings(local_backend="onnx"))
items = [EnrichmentInput(message_id=str(i), subject=f"Invoice {i}", body_text="Due: $12.") for i in range(3)]
results = enricher.enrich(items)
enricher.embed_query("invoice")
heavy = ("torch", "sentence_transformers", "transformers")
print(json.dumps({"model": enricher.model_name, "vectors": [len(r.embedding) for r in results],
                  "loaded": sorted(m for m in heavy if m in sys.modules)}))
"""


def test_enriching_with_the_onnx_backend_never_imports_torch_or_sentence_transformers():
    env = {key: value for key, value in os.environ.items() if key != "OPENAI_API_KEY"}
    completed = subprocess.run(
        [sys.executable, "-c", _NO_TORCH_PROBE],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert completed.returncode == 0, completed.stderr[-2000:]
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    assert report == {
        "model": "local:all-MiniLM-L6-v2:onnx-int8mix",
        "vectors": [384, 384, 384],
        "loaded": [],
    }


def test_corrupt_onnx_file_is_rebuilt_from_the_packaged_weights_before_use(model_copy):
    with model_copy.open("r+b") as handle:
        handle.seek(1000)
        handle.write(b"\x00" * 4096)
    assert not is_valid(model_copy)

    [vector] = _encoder(model_copy, can_rebuild=True).encode(["Your invoice is attached"])

    assert is_valid(model_copy)
    assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-4)


def test_model_file_overwritten_in_place_after_a_verified_start_is_found_corrupt(model_copy):
    assert is_valid(model_copy)  # hashed once; later starts trust the recorded size and time
    with model_copy.open("r+b") as handle:
        handle.seek(1 << 20)
        handle.write(b"\xff" * 64)

    assert not is_valid(model_copy)


def test_batches_encoded_side_by_side_give_the_same_vectors_as_one_batch_at_a_time(sample_texts):
    texts = sample_texts[:60]

    def encoder(threads: int) -> OnnxSentenceEncoder:
        return OnnxSentenceEncoder(
            max_seq_length=MAX_SEQ_LENGTH, batch_size=4, threads=threads, can_rebuild=False
        )

    side_by_side = encoder(2).encode(texts)
    one_at_a_time = encoder(1).encode(texts)

    np.testing.assert_allclose(side_by_side, one_at_a_time, atol=1e-6)


def _encode_in_child(encoder: OnnxSentenceEncoder, texts: list[str], results) -> None:  # type: ignore[no-untyped-def]
    results.put(encoder.encode(texts))


def test_a_process_forked_after_encoding_encodes_with_its_own_workers(sample_texts):
    import multiprocessing

    texts = sample_texts[:12]
    encoder = OnnxSentenceEncoder(max_seq_length=MAX_SEQ_LENGTH, batch_size=4, threads=2, can_rebuild=False)
    in_parent = encoder.encode(texts)  # the parent's worker threads exist now; a fork does not copy them
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    child = context.Process(target=_encode_in_child, args=(encoder, texts, results))
    child.start()
    in_child = results.get(timeout=120)
    child.join(timeout=30)

    np.testing.assert_allclose(in_child, in_parent, atol=1e-6)


def test_corrupt_onnx_file_without_torch_fails_with_one_line_naming_the_export_command(model_copy):
    model_copy.write_bytes(model_copy.read_bytes()[: 1 << 20])  # a truncated copy

    with pytest.raises(FatalError) as raised:
        _encoder(model_copy, can_rebuild=False).encode(["hello"])

    message = str(raised.value)
    assert "\n" not in message
    assert "python -m emailsync.enrichment.onnx_export" in message
    assert "corrupt" in message


def test_missing_default_onnx_file_is_quantised_again_from_the_fp32_export(model_copy):
    missing = model_copy.with_name("all-MiniLM-L6-v2-int8mix.onnx")  # model_copy is its fp32 source
    assert not missing.exists()
    encoder = OnnxSentenceEncoder(
        max_seq_length=MAX_SEQ_LENGTH, batch_size=8, threads=1, model_path=missing, can_rebuild=True
    )

    [vector] = encoder.encode(["Your invoice is attached"])

    assert is_valid(missing)
    assert json.loads(manifest_path(missing).read_text())["precision"] == "int8mix"
    assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-4)


def test_missing_onnx_file_without_torch_fails_instead_of_falling_back_to_torch(tmp_path):
    with pytest.raises(FatalError, match="missing"):
        _encoder(tmp_path / "absent.onnx", can_rebuild=False).encode(["hello"])


def test_onnx_is_the_default_local_backend_and_torch_is_selected_by_the_environment():
    assert Settings().local_backend == "onnx"
    assert LocalEnricher(settings=Settings()).model_name == "local:all-MiniLM-L6-v2:onnx-int8mix"
    assert Settings.from_env({}).local_backend == "onnx"
    assert Settings.from_env({"EMAILSYNC_LOCAL_BACKEND": "torch"}).local_backend == "torch"
    assert LocalEnricher(settings=Settings(local_backend="torch")).model_name == (
        "local:all-MiniLM-L6-v2:torch-fp32"
    )


def test_onnx_threads_follow_the_setting_else_the_cpus_this_process_may_use():
    configured = LocalEnricher(settings=Settings(local_threads=1))
    default = LocalEnricher(settings=Settings())

    assert configured._encoder.threads == 1
    assert default._encoder.threads == len(os.sched_getaffinity(0))


def test_fp32_onnx_and_torch_vectors_are_compatible_but_other_models_are_not():
    onnx, torch = "local:all-MiniLM-L6-v2:onnx-fp32", "local:all-MiniLM-L6-v2:torch-fp32"

    assert compatible(onnx, torch)
    assert compatible("local:all-MiniLM-L6-v2", onnx)  # stored before the runtime was named
    assert not compatible("local:all-MiniLM-L6-v2:onnx-int8", torch)
    assert not compatible("local:all-MiniLM-L6-v2:onnx-int8mix", torch)
    assert not compatible("local:all-MiniLM-L6-v2:onnx-int8mix", "local:all-MiniLM-L6-v2:onnx-int8")
    assert not compatible("openai:gpt-4o-mini+text-embedding-3-small", onnx)


def test_search_notes_results_embedded_by_an_incompatible_model_in_one_line():
    from emailsync.cli.queries import incompatible_models_note

    def record(model: str) -> EmailRecord:
        return EmailRecord(message_id=model, app_user_id="u", enrichment=EnrichmentInfo(model=model))

    same_space = [record("local:all-MiniLM-L6-v2:torch-fp32")]
    mixed = [*same_space, record("openai:gpt-4o-mini+text-embedding-3-small")]

    assert incompatible_models_note(same_space, "local:all-MiniLM-L6-v2:onnx-fp32") is None
    note = incompatible_models_note(mixed, "local:all-MiniLM-L6-v2:onnx-fp32")
    assert note is not None and "\n" not in note
    assert "text-embedding-3-small" in note


def test_int8_onnx_is_opt_in_and_named_as_its_own_vector_space():
    int8 = LocalEnricher(settings=Settings.from_env({"EMAILSYNC_ONNX_PRECISION": "int8"}))

    assert int8.model_name == "local:all-MiniLM-L6-v2:onnx-int8"
    assert int8._encoder.model_path.name == "all-MiniLM-L6-v2-int8.onnx"
    assert not compatible(int8.model_name, "local:all-MiniLM-L6-v2:onnx-fp32")
