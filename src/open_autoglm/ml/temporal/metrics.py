"""Ranking metrics for link prediction: average precision and ROC-AUC, ties handled.

Both match scikit-learn's definitions (AP as the step-wise sum over distinct thresholds, AUC
as the Mann-Whitney statistic with ties counted half), so a model that outputs 0/1 scores,
like EdgeBank, is scored the way the published tables score it.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["average_precision", "roc_auc"]


def average_precision(pos: npt.ArrayLike, neg: npt.ArrayLike) -> float:
    """AP of positive scores ``pos`` against negative scores ``neg``."""
    p, n = np.asarray(pos, dtype=np.float64), np.asarray(neg, dtype=np.float64)
    if p.size == 0:
        return float("nan")
    scores = np.concatenate([p, n])
    labels = np.concatenate([np.ones(p.size), np.zeros(n.size)])
    order = np.argsort(-scores, kind="mergesort")
    scores, labels = scores[order], labels[order]
    last = np.r_[np.flatnonzero(np.diff(scores)), scores.size - 1]  # end of each tie group
    tp = np.cumsum(labels)[last]
    fp = (last + 1) - tp
    precision = tp / (tp + fp)
    recall = tp / p.size
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def roc_auc(pos: npt.ArrayLike, neg: npt.ArrayLike) -> float:
    """Probability that a random positive outscores a random negative (ties count 1/2)."""
    p, n = np.asarray(pos, dtype=np.float64), np.asarray(neg, dtype=np.float64)
    if p.size == 0 or n.size == 0:
        return float("nan")
    scores = np.concatenate([p, n])
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(scores.size)
    sorted_scores = scores[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_scores)) + 1]
    ends = np.r_[starts[1:], scores.size]
    avg = (starts + ends - 1) / 2.0 + 1.0  # average 1-based rank of each tie group
    ranks[order] = np.repeat(avg, ends - starts)
    u = ranks[: p.size].sum() - p.size * (p.size + 1) / 2.0
    return float(u / (p.size * n.size))
