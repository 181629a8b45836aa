"""Learned tags for the local backend: small logistic-regression heads on the MiniLM embedding.

Zero-shot similarity to a tag description cannot tell a spam offer from a shop's newsletter, or a
newsletter from a mailing-list discussion whose footer says "unsubscribe". The heads in
`tag_head.json` (trained by bench/tag_eval/train.py on the labelled SpamAssassin set, see
bench/tag_eval/README.md) decide those tags instead; the other tags stay zero-shot.

Each head sees the unit embedding plus two footer markers, because a publisher's "unsubscribe" and a
list server's "listinfo" footer are decisive and usually sit past the 128 tokens the model reads.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HEAD_FILE = Path(__file__).with_name("tag_head.json")
_SCAN_CHARS = 8000
_UNSUBSCRIBE = re.compile(
    r"\bunsubscribe\b|\bmanage (?:your )?(?:subscription|email preferences)\b|\bopt[- ]?out\b", re.IGNORECASE
)
_LIST_FOOTER = re.compile(r"/listinfo/|\bmailing list\b|-request@|yahoogroups|egroups", re.IGNORECASE)
MARKER_NAMES = ("unsubscribe", "list_footer")


def markers(subject: str, body_text: str) -> np.ndarray:
    """The footer markers of one message (0/1 each, in MARKER_NAMES order)."""
    text = f"{subject}\n{body_text[:_SCAN_CHARS]}\n{body_text[-_SCAN_CHARS:]}"
    return np.array(
        [float(bool(_UNSUBSCRIBE.search(text))), float(bool(_LIST_FOOTER.search(text)))], dtype=np.float32
    )


@dataclass(frozen=True)
class TagHead:
    tag: str
    weights: np.ndarray  # embedding dimensions + len(MARKER_NAMES)
    bias: float
    threshold: float

    def probability(self, features: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-(features @ self.weights + self.bias)))


def features(vectors: np.ndarray, marker_rows: np.ndarray) -> np.ndarray:
    return np.hstack([vectors, marker_rows]).astype(np.float32)


def load_heads(path: Path = HEAD_FILE) -> list[TagHead]:
    data = json.loads(path.read_text())
    return [
        TagHead(
            tag=tag,
            weights=np.asarray(head["weights"], dtype=np.float32),
            bias=float(head["bias"]),
            threshold=float(head["threshold"]),
        )
        for tag, head in data["heads"].items()
    ]


def save_heads(heads: list[TagHead], info: dict[str, object], path: Path = HEAD_FILE) -> None:
    data = {
        "info": info,
        "heads": {
            head.tag: {
                "bias": round(head.bias, 6),
                "threshold": round(head.threshold, 4),
                "weights": [round(float(w), 5) for w in head.weights],
            }
            for head in heads
        },
    }
    path.write_text(json.dumps(data) + "\n")
