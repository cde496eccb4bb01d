"""Classification metrics (numpy only): accuracy, macro and weighted F1, binary ROC-AUC."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["classification_metrics", "f1_per_class", "roc_auc"]


def f1_per_class(y_true: Any, y_pred: Any, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """F1 of each class and its support (rows of that class), both (classes,)."""
    t, p = np.asarray(y_true), np.asarray(y_pred)
    f1 = np.zeros(classes)
    support = np.zeros(classes)
    for c in range(classes):
        tp = float(np.sum((t == c) & (p == c)))
        fp = float(np.sum((t != c) & (p == c)))
        fn = float(np.sum((t == c) & (p != c)))
        support[c] = tp + fn
        f1[c] = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
    return f1, support


def roc_auc(y_true: Any, score: Any) -> float:
    """Area under the ROC curve of a binary problem (Mann-Whitney U, ties averaged)."""
    t = np.asarray(y_true).astype(bool)
    s = np.asarray(score, dtype=np.float64)
    pos, neg = int(t.sum()), int((~t).sum())
    if not pos or not neg:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s))
    sorted_s = s[order]
    i = 0
    while i < len(s):  # average ranks over runs of equal scores
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[t].sum() - pos * (pos + 1) / 2) / (pos * neg))


def classification_metrics(y_true: Any, proba: Any) -> dict[str, float]:
    """Accuracy, macro/weighted F1; for two classes also ROC-AUC and class 1's F1.

    ``proba`` is (rows, classes); class 1 is the positive class of a binary label.
    """
    t = np.asarray(y_true)
    prob = np.asarray(proba)
    classes = prob.shape[1]
    pred = prob.argmax(axis=1)
    f1, support = f1_per_class(t, pred, classes)
    out = {
        "accuracy": float(np.mean(pred == t)) if len(t) else float("nan"),
        "macro_f1": float(f1.mean()),
        "weighted_f1": float((f1 * support).sum() / max(support.sum(), 1)),
    }
    if classes == 2:
        out["roc_auc"] = roc_auc(t == 1, prob[:, 1])
        out["positive_f1"] = float(f1[1])
    return out
