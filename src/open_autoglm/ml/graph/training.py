"""One training loop for node classification, full-batch or neighbor-sampled.

The loop is split into pieces the parallel trainers reuse: :func:`iter_batches` yields
(features, edges, rows-to-score, labels) for either mode, :func:`train_step` does one
optimizer step, :func:`evaluate` scores the whole graph, :class:`EarlyStopping` is a pure
object fed one validation result per epoch.
"""

from __future__ import annotations

import copy
import enum
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from open_autoglm.ml.graph.data import GraphTensors
from open_autoglm.ml.graph.features import SparseFeatures, worth_sparse
from open_autoglm.ml.graph.sampler import CSRGraph, NeighborSampler

__all__ = [
    "Batch",
    "EarlyStopping",
    "Features",
    "TrainConfig",
    "TrainMode",
    "TrainResult",
    "evaluate",
    "iter_batches",
    "make_optimizer",
    "model_features",
    "train_node_classifier",
    "train_step",
]

Features = Tensor | SparseFeatures
# (x, edge_index, rows of the model output to score, their labels)
Batch = tuple[Features, Tensor, Tensor, Tensor]
EpochCallback = Callable[[int, dict[str, float]], None]


class TrainMode(enum.StrEnum):
    FULL = "full"
    SAMPLED = "sampled"
    SYNC = "sync"
    ASYNC = "async"


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings. ``patience`` 0 trains all ``epochs`` without early stopping."""

    epochs: int = 200
    lr: float = 0.01
    weight_decay: float = 5e-4
    patience: int = 0
    mode: TrainMode = TrainMode.FULL
    batch_size: int = 256
    fanout: tuple[int, ...] = (10, 10)
    workers: int = 2
    seed: int = 0
    # "adamw": decoupled weight decay (default). "adam_l2": Adam with L2 added to the
    # gradient, the regulariser the GCN and GAT papers used; their wd 5e-4 means that.
    optimizer: str = "adamw"


@dataclass
class EarlyStopping:
    """The GAT paper's rule: patience resets when validation accuracy or loss improves,
    and the checkpoint moves only when neither got worse (``acc >= best`` and ``loss <= best``).
    """

    patience: int
    best_epoch: int = -1
    best_acc: float = -1.0
    best_loss: float = float("inf")
    bad_epochs: int = 0

    def update(self, epoch: int, val_acc: float, val_loss: float) -> bool:
        """Record one epoch; return True when its weights become the checkpoint."""
        checkpoint = val_acc >= self.best_acc and val_loss <= self.best_loss
        if checkpoint:
            self.best_epoch = epoch
        if val_acc >= self.best_acc or val_loss <= self.best_loss:
            self.best_acc = max(self.best_acc, val_acc)
            self.best_loss = min(self.best_loss, val_loss)
            self.bad_epochs = 0
        else:
            self.bad_epochs += 1
        return checkpoint

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.bad_epochs >= self.patience


@dataclass
class TrainResult:
    history: list[dict[str, float]]
    best_epoch: int
    metrics: dict[str, float]  # the best epoch's evaluation
    state: dict[str, Tensor]  # weights of the best epoch
    train_nodes: int = 0  # seed nodes processed by optimizer steps
    train_seconds: float = 0.0  # time inside training steps (evaluation excluded)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def nodes_per_second(self) -> float:
        return self.train_nodes / self.train_seconds if self.train_seconds > 0 else 0.0


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam(W) with the fused kernel: one pass over all parameters, ~3x faster on CPU."""
    params = list(model.parameters())
    if cfg.optimizer == "adam_l2":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)


def model_features(model: nn.Module, data: GraphTensors) -> Features:
    """``data.x`` as the model runs it fastest: CSR rows if it takes them and ``x`` is sparse."""
    if getattr(model, "sparse_features", False) and worth_sparse(data.x):
        return SparseFeatures.from_dense(data.x)
    return data.x


def iter_batches(
    data: GraphTensors,
    train_idx: Tensor,
    *,
    sampler: NeighborSampler | None,
    batch_size: int,
    generator: torch.Generator,
    features: Features | None = None,
) -> Iterator[Batch]:
    """Yield one full-graph batch (no sampler) or shuffled sampled mini-batches of ``train_idx``.

    ``features`` defaults to ``data.x`` (see :func:`model_features`).
    """
    x = data.x if features is None else features
    if sampler is None:
        yield x, data.edge_index, train_idx, data.y[train_idx]
        return
    perm = train_idx[torch.randperm(train_idx.numel(), generator=generator)]
    for seeds in perm.split(batch_size):  # type: ignore[no-untyped-call]
        sub = sampler.sample(seeds, generator)
        rows = torch.arange(sub.batch_size)
        yield x[sub.n_id], sub.edge_index, rows, data.y[seeds]


def train_step(model: nn.Module, opt: torch.optim.Optimizer, batch: Batch) -> float:
    """One forward/backward/update on a batch; returns the loss."""
    x, edge_index, rows, y = batch
    model.train()
    opt.zero_grad(set_to_none=True)
    logits = model(x, edge_index)[rows]  # (batch, classes)
    loss = F.cross_entropy(logits, y)
    loss.backward()  # type: ignore[no-untyped-call]
    opt.step()
    return float(loss.detach())


@torch.no_grad()
def evaluate(
    model: nn.Module, data: GraphTensors, features: Features | None = None
) -> dict[str, float]:
    """Full-graph inference; accuracy per split and validation loss."""
    model.eval()
    logits = model(data.x if features is None else features, data.edge_index)  # (nodes, classes)
    pred = logits.argmax(dim=1)
    out: dict[str, float] = {}
    for name, idx in (("train", data.train_idx), ("val", data.val_idx), ("test", data.test_idx)):
        out[f"{name}_acc"] = (
            float((pred[idx] == data.y[idx]).float().mean()) if idx.numel() else float("nan")
        )
    out["val_loss"] = (
        float(F.cross_entropy(logits[data.val_idx], data.y[data.val_idx]))
        if data.val_idx.numel()
        else float("nan")
    )
    return out


def make_sampler(data: GraphTensors, fanout: Sequence[int]) -> NeighborSampler:
    return NeighborSampler(CSRGraph.from_edge_index(data.edge_index, data.num_nodes), fanout)


def train_node_classifier(
    model: nn.Module,
    data: GraphTensors,
    cfg: TrainConfig,
    *,
    on_epoch: EpochCallback | None = None,
    check_cancelled: Callable[[], None] | None = None,
) -> TrainResult:
    """Train in this process (mode ``full`` or ``sampled``) and keep the best epoch's weights.

    ``on_epoch(epoch, metrics)`` is called after each epoch's evaluation; ``check_cancelled``
    is called between steps and may raise to abort.
    """
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    sampler = make_sampler(data, cfg.fanout) if cfg.mode != TrainMode.FULL else None
    features = model_features(model, data)
    opt = make_optimizer(model, cfg)
    stopper = EarlyStopping(cfg.patience)
    history: list[dict[str, float]] = []
    best_state = copy.deepcopy(model.state_dict())
    best_metrics: dict[str, float] = {}
    seen, busy = 0, 0.0
    started = time.perf_counter()
    for epoch in range(cfg.epochs):
        losses: list[float] = []
        batches = iter_batches(
            data,
            data.train_idx,
            sampler=sampler,
            batch_size=cfg.batch_size,
            generator=gen,
            features=features,
        )
        t0 = time.perf_counter()
        for batch in batches:
            if check_cancelled is not None:
                check_cancelled()
            losses.append(train_step(model, opt, batch))
            seen += int(batch[2].numel())
        busy += time.perf_counter() - t0
        metrics = {
            "epoch": float(epoch),
            "loss": sum(losses) / len(losses),
            **evaluate(model, data, features),
        }
        history.append(metrics)
        if stopper.update(epoch, metrics["val_acc"], metrics["val_loss"]):
            best_state = copy.deepcopy(model.state_dict())
            best_metrics = metrics
        if on_epoch is not None:
            on_epoch(epoch, metrics)
        if stopper.should_stop:
            break
    span = time.perf_counter() - started  # evaluation included: it is on the path here
    model.load_state_dict(best_state)
    return TrainResult(
        history=history,
        best_epoch=stopper.best_epoch,
        metrics=best_metrics,
        state=best_state,
        train_nodes=seen,
        train_seconds=busy,
        extra={"train_span_seconds": span, "wall_nodes_per_s": seen / span if span > 0 else 0.0},
    )
