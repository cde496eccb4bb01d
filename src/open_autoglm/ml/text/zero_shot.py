"""Zero-shot classification with an embedding model: a text takes the label it is closest to.

A classifier head needs labelled data and training; an embedding model already places a text
near the words that describe it. Scoring each text against the embedded label names gives a
usable classifier from any registered embedding model (the bundled MiniLM included), with
labels chosen per request.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

__all__ = ["ZERO_SHOT_TEMPERATURE", "zero_shot_predictions"]

# Cosine similarities lie in [-1, 1]; dividing by this before the softmax turns a gap of
# 0.1 between two labels into a probability ratio of about e^2.
ZERO_SHOT_TEMPERATURE: Final = 0.05


def zero_shot_predictions(
    texts: Any,
    labels: Any,
    names: Sequence[str],
    *,
    top_k: int | None = 1,
    temperature: float = ZERO_SHOT_TEMPERATURE,
) -> list[list[dict[str, Any]]]:
    """Top ``top_k`` labels (all when None) per text, with softmax scores, best first.

    Args:
        texts: unit-norm text vectors, a tensor (n_texts, dim).
        labels: unit-norm label vectors, a tensor (n_labels, dim).
        names: the label names, in the order of ``labels``.
    """
    import torch

    similarity = texts @ labels.T  # (n_texts, n_labels), cosine since both are unit-norm
    probs = torch.softmax(similarity.float() / temperature, dim=-1)
    k = len(names) if top_k is None else min(top_k, len(names))
    out = []
    for row in probs:
        scores, idx = row.topk(k)
        out.append(
            [
                {"label": names[int(i)], "score": round(float(s), 6)}
                for s, i in zip(scores, idx, strict=True)
            ]
        )
    return out
