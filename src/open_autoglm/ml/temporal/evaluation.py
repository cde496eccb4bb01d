"""The evaluation protocol: walk the stream in time order, score each batch, then reveal it.

A walk replays the training events into the model's state (TGN memory, EdgeBank's bank),
then scores every validation and test batch against one negative per positive for each
negative strategy, and only afterwards observes the batch. The positives of a batch touching
a node unseen in training also count towards the inductive figures. AP and ROC-AUC are
computed per batch and averaged, as DyGLib reports them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from open_autoglm.ml.temporal.edgebank import EdgeBank
from open_autoglm.ml.temporal.history import EventHistory
from open_autoglm.ml.temporal.metrics import average_precision, roc_auc
from open_autoglm.ml.temporal.negatives import NegativeSampler, NegativeStrategy
from open_autoglm.ml.temporal.split import ChronologicalSplit
from open_autoglm.spec.events import EventStream

__all__ = [
    "EdgeBankScorer",
    "LinkScorer",
    "ModuleScorer",
    "evaluate_split",
    "walk_batches",
]

IntArray = npt.NDArray[np.int64]


class LinkScorer(Protocol):
    """A model seen by the protocol: stateful scorers (TGN, EdgeBank) and stateless ones alike."""

    def reset_state(self) -> None: ...
    def set_history(self, history: EventHistory) -> None: ...
    def score(
        self, src: IntArray, dst: IntArray, t: npt.NDArray[np.float64]
    ) -> npt.NDArray[np.float64]: ...
    def observe(
        self, src: IntArray, dst: IntArray, t: npt.NDArray[np.float64], eids: IntArray
    ) -> None: ...


class ModuleScorer:
    """A TGAT/TGN module in eval mode: probabilities without gradients."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def reset_state(self) -> None:
        self.model.eval()
        self.model.reset_state()  # type: ignore[operator]

    def set_history(self, history: EventHistory) -> None:
        self.model.set_history(history)  # type: ignore[operator]

    @torch.no_grad()
    def score(
        self, src: IntArray, dst: IntArray, t: npt.NDArray[np.float64]
    ) -> npt.NDArray[np.float64]:
        logits = self.model(torch.from_numpy(src), torch.from_numpy(dst), t)  # (B,)
        return torch.sigmoid(logits).double().numpy()

    def observe(
        self, src: IntArray, dst: IntArray, t: npt.NDArray[np.float64], eids: IntArray
    ) -> None:
        self.model.observe(  # type: ignore[operator]
            torch.from_numpy(src), torch.from_numpy(dst), t, torch.from_numpy(eids)
        )


class EdgeBankScorer:
    """EdgeBank under the same protocol (it keeps its own bank, ignores the history)."""

    def __init__(self, window: float | None = None) -> None:
        self.bank = EdgeBank(window)

    def reset_state(self) -> None:
        self.bank.reset()

    def set_history(self, history: EventHistory) -> None:
        pass

    def score(
        self, src: IntArray, dst: IntArray, t: npt.NDArray[np.float64]
    ) -> npt.NDArray[np.float64]:
        return self.bank.score(src, dst, t)

    def observe(
        self, src: IntArray, dst: IntArray, t: npt.NDArray[np.float64], eids: IntArray
    ) -> None:
        self.bank.observe(src, dst, t)


def walk_batches(ids: IntArray, batch_size: int) -> Iterable[IntArray]:
    """Event ids in chronological batches."""
    for start in range(0, ids.size, batch_size):
        yield ids[start : start + batch_size]


@dataclass
class _Collector:
    ap: list[float]
    auc: list[float]

    def add(self, pos: npt.NDArray[np.float64], neg: npt.NDArray[np.float64]) -> None:
        if pos.size:
            self.ap.append(average_precision(pos, neg))
            self.auc.append(roc_auc(pos, neg))

    def result(self) -> tuple[float, float]:
        if not self.ap:
            return float("nan"), float("nan")
        return float(np.mean(self.ap)), float(np.mean(self.auc))


def evaluate_split(
    scorer: LinkScorer,
    stream: EventStream,
    split: ChronologicalSplit,
    *,
    strategies: Sequence[NegativeStrategy] = tuple(NegativeStrategy),
    parts: Sequence[str] = ("val", "test"),
    batch_size: int = 200,
    seed: int = 0,
    train_history: EventHistory | None = None,
    full_history: EventHistory | None = None,
    check_cancelled: Callable[[], None] | None = None,
) -> dict[str, float]:
    """Metrics ``{part}_{transductive|inductive}_{strategy}_{ap|auc}`` for the given parts.

    ``parts`` must be a prefix of (val, test) walked in order: the state after validation
    is the state test starts from.
    """
    full = full_history or EventHistory.of(stream)
    scorer.reset_state()
    scorer.set_history(train_history or EventHistory.of(stream, split.train))
    src, dst, t = stream.src, stream.dst, stream.t
    for ids in walk_batches(np.flatnonzero(split.train), batch_size):
        scorer.observe(src[ids], dst[ids], t[ids], ids)
    scorer.set_history(full)
    out: dict[str, float] = {}
    for part in parts:
        mask = split.val if part == "val" else split.test
        unseen = split.new_node_val if part == "val" else split.new_node_test
        sampler = NegativeSampler(src, dst, t, split.last_train_time, seed=seed + (part == "test"))
        coll = {
            (setting, s): _Collector([], [])
            for setting in ("transductive", "inductive")
            for s in strategies
        }
        for ids in walk_batches(np.flatnonzero(mask), batch_size):
            if check_cancelled is not None:
                check_cancelled()
            bs, bd, bt = src[ids], dst[ids], t[ids]
            pos = scorer.score(bs, bd, bt)
            ind = unseen[ids]
            for s in strategies:
                ns, nd = sampler.sample(s, bs, bd, bt)
                neg = scorer.score(ns, nd, bt)
                coll[("transductive", s)].add(pos, neg)
                coll[("inductive", s)].add(pos[ind], neg[ind])
            scorer.observe(bs, bd, bt, ids)
        for (setting, s), c in coll.items():
            ap, auc = c.result()
            out[f"{part}_{setting}_{s}_ap"] = ap
            out[f"{part}_{setting}_{s}_auc"] = auc
    return out
