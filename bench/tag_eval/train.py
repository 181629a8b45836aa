"""Train the spam and newsletter heads (emailsync/enrichment/tag_head.json) on the labelled set.

`python -m bench.tag_eval.train`: embeds every labelled message with the local ONNX backend, fits one
logistic regression per head tag on the "train" split, picks each threshold from cross-validated
train predictions (never from the test split), writes the heads and prints held-out figures.
"""

from __future__ import annotations

import numpy as np

from bench.tag_eval import dataset
from emailsync.enrichment.local import EMBEDDING_TEXT_CHARS, LocalEnricher
from emailsync.enrichment.tag_head import TagHead, features, markers, save_heads
from emailsync.enrichment.text import bodies_and_embedding_texts

HEAD_TAGS = ("spam", "newsletter")
MIN_PRECISION = 0.85


def embed(examples: list[dataset.Example]) -> np.ndarray:
    items = [example.item for example in examples]
    _bodies, texts = bodies_and_embedding_texts(items, EMBEDDING_TEXT_CHARS)
    vectors = LocalEnricher(backend="onnx")._encoder.encode(texts)
    marker_rows = np.stack([markers(item.subject, item.body_text) for item in items])
    return features(vectors, marker_rows)


def pick_threshold(labels: np.ndarray, scores: np.ndarray) -> float:
    """The threshold with the best F1 among those keeping precision ≥ MIN_PRECISION."""
    best, best_f1 = 0.5, -1.0
    for threshold in np.arange(0.2, 0.95, 0.025):
        predicted = scores >= threshold
        tp = float(np.sum(predicted & labels))
        precision = tp / max(float(predicted.sum()), 1.0)
        recall = tp / max(float(labels.sum()), 1.0)
        f1 = 2 * precision * recall / max(precision + recall, 1e-9)
        if precision >= MIN_PRECISION and f1 > best_f1:
            best, best_f1 = float(threshold), f1
    return best


def main() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_predict

    examples = dataset.load()
    if examples is None:
        raise SystemExit(f"the corpus is not here ({dataset.CORPUS_MBOX})")
    x = embed(examples)
    train = np.array([example.split == "train" for example in examples])
    heads = []
    for tag in HEAD_TAGS:
        y = np.array([getattr(example, tag) for example in examples])
        model = LogisticRegression(C=4.0, class_weight="balanced", max_iter=2000)
        scores = cross_val_predict(model, x[train], y[train], cv=5, method="predict_proba")[:, 1]
        threshold = pick_threshold(y[train], scores)
        model.fit(x[train], y[train])
        heads.append(TagHead(tag, model.coef_[0].astype(np.float32), float(model.intercept_[0]), threshold))
        test_scores = model.predict_proba(x[~train])[:, 1] >= threshold
        tp = int(np.sum(test_scores & y[~train]))
        print(
            f"{tag}: threshold {threshold:.3f}, held-out precision {tp / max(test_scores.sum(), 1):.3f} "
            f"recall {tp / max(y[~train].sum(), 1):.3f}"
        )
    save_heads(heads, {"trained_on": "bench/tag_eval/labels.csv split=train", "examples": int(train.sum())})


if __name__ == "__main__":
    main()
