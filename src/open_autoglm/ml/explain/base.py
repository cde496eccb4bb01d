"""What every explainer returns, and the registry that maps a model family to its explainer.

One explainer module per family (text classifiers, embedding models, graph node classifiers)
registers itself here, so the ``explain`` task type looks explainers up in one place and a
new family is one module, as task types are.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Family",
    "TokenAttribution",
    "explainer_for",
    "register_explainer",
    "top_items",
]


class Family(enum.StrEnum):
    """Model families with an explainer: the task type a registered model serves."""

    TEXT_CLASSIFICATION = "text-classification"
    EMBEDDING = "embedding"
    GRAPH = "graph-predict"


@dataclass(frozen=True)
class TokenAttribution:
    """Per-token attributions of one text towards one output.

    ``delta`` is the convergence gap of integrated gradients: sum(scores) minus
    (f(input) - f(baseline)); ``None`` for methods that define none.
    """

    text: str
    tokens: list[str]
    scores: list[float]
    target: str
    output: float
    baseline_output: float
    delta: float | None
    method: str
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "tokens": self.tokens,
            "scores": [round(s, 6) for s in self.scores],
            "target": self.target,
            "output": round(self.output, 6),
            "baseline_output": round(self.baseline_output, 6),
            "convergence_delta": None if self.delta is None else round(self.delta, 6),
            "method": self.method,
            **self.extra,
        }


def top_items(names: list[str], scores: list[float], k: int) -> list[dict[str, Any]]:
    """The ``k`` entries of largest absolute score, largest first, ties by name."""
    order = sorted(range(len(names)), key=lambda i: (-abs(scores[i]), names[i]))
    return [{"name": names[i], "score": round(scores[i], 6)} for i in order[:k]]


Explain = Callable[..., dict[str, Any]]
_EXPLAINERS: dict[Family, Explain] = {}


def register_explainer(family: Family) -> Callable[[Explain], Explain]:
    """Register ``fn`` as the explainer of ``family`` (one per family)."""

    def wrap(fn: Explain) -> Explain:
        if family in _EXPLAINERS and _EXPLAINERS[family] is not fn:
            raise ValueError(f"an explainer for {family.value!r} is registered already")
        _EXPLAINERS[family] = fn
        return fn

    return wrap


def explainer_for(family: Family) -> Explain:
    """The registered explainer of ``family``; importing the family modules registers them."""
    from open_autoglm.ml.explain import graph, similarity, tokens  # noqa: F401

    return _EXPLAINERS[family]
