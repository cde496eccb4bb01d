"""Classifier metrics for a fine-tuned model: accuracy, macro F1, per-class scores, confusion.

numpy only, so the handler and tests compute them without torch; accuracy and the F1s come
from :mod:`open_autoglm.ml.multimodal.metrics`, the same definitions the fusion models report.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from open_autoglm.ml.multimodal.metrics import classification_metrics

__all__ = ["confusion_matrix", "evaluation_report", "log_loss"]


def confusion_matrix(y_true: Any, y_pred: Any, classes: int) -> np.ndarray:
    """Counts (classes, classes): row = true class, column = predicted class."""
    out = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(out, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return out


def log_loss(y_true: Any, proba: Any) -> float:
    """Mean cross-entropy of the true class under ``proba`` (rows, classes)."""
    t = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(proba, dtype=np.float64)
    if not len(t):
        return float("nan")
    return float(-np.mean(np.log(np.clip(p[np.arange(len(t)), t], 1e-12, 1.0))))


def evaluation_report(y_true: Any, proba: Any, names: Sequence[str]) -> dict[str, Any]:
    """Accuracy, loss, macro/weighted F1, per-class precision/recall/F1/support, confusion.

    ``proba`` is (rows, classes) with columns in ``names`` order.
    """
    t = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(proba, dtype=np.float64).reshape(len(t), len(names))
    pred = p.argmax(axis=1)
    scores = classification_metrics(t, p)
    cm = confusion_matrix(t, pred, len(names))
    tp = np.diag(cm).astype(np.float64)
    predicted, actual = cm.sum(axis=0), cm.sum(axis=1)
    per_class = {}
    for c, name in enumerate(names):
        precision = tp[c] / predicted[c] if predicted[c] else 0.0
        recall = tp[c] / actual[c] if actual[c] else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {
            "precision": float(precision),
            "recall": float(recall),
            "f1": float(f1),
            "support": int(actual[c]),
        }
    return {
        "rows": len(t),
        "accuracy": scores["accuracy"],
        "macro_f1": scores["macro_f1"],
        "weighted_f1": scores["weighted_f1"],
        "loss": log_loss(t, p),
        "per_class": per_class,
        "confusion": cm.tolist(),
    }
