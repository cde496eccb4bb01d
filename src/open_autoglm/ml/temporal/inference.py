"""Prediction from a trained model and its event store: link probabilities and top-k.

Every query is answered from the events strictly before its time: stateful models (TGN,
EdgeBank) replay the store up to that time, TGAT's sampler filters by time. The store may
have grown since training (appended events); the model then uses those events as history
without retraining, and nodes first seen in them are scored inductively.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from open_autoglm.ml.temporal.evaluation import EdgeBankScorer, LinkScorer, ModuleScorer
from open_autoglm.ml.temporal.history import EventHistory
from open_autoglm.ml.temporal.models import (
    TemporalModelConfig,
    TemporalModelKind,
    build_temporal_model,
)
from open_autoglm.spec.events import EventStream

__all__ = ["build_scorer", "score_links", "top_k_destinations"]

IntArray = npt.NDArray[np.int64]
_CHUNK = 2048


def build_scorer(
    config: dict[str, Any],
    store: EventStream,
    weights: dict[str, torch.Tensor] | None,
    window: float | None = None,
) -> LinkScorer:
    """The trained model, sized for the store's nodes, with its weights loaded."""
    cfg = TemporalModelConfig.from_dict({**config, "num_nodes": max(store.num_nodes, 1)})
    if cfg.kind is TemporalModelKind.EDGEBANK:
        return EdgeBankScorer(window)
    model = build_temporal_model(cfg)
    if weights is not None:
        model.load_state_dict(weights, strict=False)  # per-node state is rebuilt by replay
    return ModuleScorer(model)


def score_links(
    scorer: LinkScorer, store: EventStream, src: IntArray, dst: IntArray, t: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """Probability (Q,) of each link ``(src, dst)`` at time ``t``, from events before ``t``."""
    scorer.reset_state()
    scorer.set_history(EventHistory.of(store))
    order = np.argsort(t, kind="stable")
    out = np.zeros(t.size)
    pos = 0
    for qt in np.unique(t):
        end = int(np.searchsorted(store.t, qt, side="left"))  # events strictly before qt
        for start in range(pos, end, _CHUNK):
            ids = np.arange(start, min(end, start + _CHUNK))
            scorer.observe(store.src[ids], store.dst[ids], store.t[ids], ids)
        pos = max(pos, end)
        rows = order[t[order] == qt]
        for chunk in np.array_split(rows, max(1, rows.size // _CHUNK + 1)):
            if chunk.size:
                out[chunk] = scorer.score(src[chunk], dst[chunk], t[chunk])
    return out


def top_k_destinations(
    scorer: LinkScorer,
    store: EventStream,
    src: int,
    t: float,
    k: int,
    candidates: Sequence[int] | None = None,
) -> list[tuple[int, float]]:
    """The ``k`` most likely destinations ``(node index, probability)`` of ``src`` at ``t``.

    Candidates default to every node that has been a destination in the store.
    """
    cand = np.unique(store.dst) if candidates is None else np.asarray(candidates, dtype=np.int64)
    cand = cand[cand != src]
    probs = score_links(
        scorer, store, np.full(cand.size, src, dtype=np.int64), cand, np.full(cand.size, t)
    )
    best = np.argsort(-probs, kind="stable")[:k]
    return [(int(cand[i]), float(probs[i])) for i in best]
