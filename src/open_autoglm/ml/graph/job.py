"""Node classification as a :class:`~open_autoglm.ml.training.job.TrainJob`: graph-train on the
shared training facility (DDP or FSDP ranks, bf16, checkpoints, resume)."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from open_autoglm.ml.graph.data import GraphTensors
from open_autoglm.ml.graph.sampler import NeighborSampler
from open_autoglm.ml.graph.training import (
    EarlyStopping,
    EpochCallback,
    Features,
    TrainConfig,
    TrainMode,
    TrainResult,
    evaluate,
    make_optimizer,
    make_sampler,
    model_features,
)
from open_autoglm.ml.training.fit import FitResult, fit
from open_autoglm.ml.training.job import TrainJob
from open_autoglm.ml.training.spec import DistributedParams

__all__ = ["GraphJob", "GraphStopper", "to_train_result", "train_on_facility"]


@dataclasses.dataclass
class GraphStopper:
    """:class:`EarlyStopping` (the GAT paper's rule) fed the facility's metrics dict."""

    patience: int
    best_epoch: int = -1
    best_acc: float = -1.0
    best_loss: float = float("inf")
    bad_epochs: int = 0

    def update(self, epoch: int, metrics: dict[str, float]) -> bool:
        rule = EarlyStopping(**dataclasses.asdict(self))
        checkpoint = rule.update(epoch, metrics["val_acc"], metrics["val_loss"])
        for f in dataclasses.fields(self):
            setattr(self, f.name, getattr(rule, f.name))
        return checkpoint

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.bad_epochs >= self.patience


class GraphJob(TrainJob):
    """Full-batch (one global batch of every training node) or neighbour-sampled mini-batches."""

    preload = ("open_autoglm.ml.graph.models", "open_autoglm.ml.graph.job")

    def __init__(self, data: GraphTensors, model: nn.Module, cfg: TrainConfig) -> None:
        self.data = data
        self.template = model  # every rank trains a copy of these initial weights
        self.cfg = cfg
        self.seed = cfg.seed
        self.epochs = cfg.epochs
        self.patience = cfg.patience
        self.sampled = cfg.mode is not TrainMode.FULL
        self._sampler: NeighborSampler | None = None  # built in each rank, never pickled
        self._features: Features | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_sampler": None, "_features": None}

    def build_model(self) -> nn.Module:
        return copy.deepcopy(self.template)

    def make_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        return make_optimizer(model, self.cfg)

    def make_stopper(self) -> GraphStopper:
        return GraphStopper(self.patience)

    def global_batches(self, epoch: int) -> list[list[int]]:
        train = self.data.train_idx
        if not self.sampled:
            return [train.tolist()]
        gen = torch.Generator().manual_seed(self.seed * 7919 + epoch)
        perm = train[torch.randperm(train.numel(), generator=gen)].tolist()
        size = self.cfg.batch_size
        return [perm[i : i + size] for i in range(0, len(perm), size)]

    def _x(self) -> Features:
        # every rank's model is a copy of the template: ask the template what features it takes
        if self._features is None:
            self._features = model_features(self.template, self.data)
        return self._features

    def collate(self, indices: list[int], generator: torch.Generator) -> Any:
        seeds = torch.tensor(indices, dtype=torch.long)
        x = self._x()
        if not self.sampled:
            return x, self.data.edge_index, seeds, self.data.y[seeds]
        if self._sampler is None:
            self._sampler = make_sampler(self.data, self.cfg.fanout)
        sub = self._sampler.sample(seeds, generator)
        return x[sub.n_id], sub.edge_index, torch.arange(sub.batch_size), self.data.y[seeds]

    def sample_losses(self, model: nn.Module, batch: Any) -> Tensor:
        x, edge_index, rows, y = batch
        logits = model(x, edge_index)[rows]  # (batch, classes)
        return F.cross_entropy(logits.float(), y, reduction="none")

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        return evaluate(model, self.data, self._x())


def to_train_result(fitted: FitResult, cfg: TrainConfig, workers: int) -> TrainResult:
    """The facility's result in the graph trainer's shape (what graph-train reports)."""
    return TrainResult(
        history=fitted.history,
        best_epoch=fitted.best_epoch,
        metrics=fitted.metrics,
        state=fitted.state,
        train_nodes=fitted.samples,
        train_seconds=fitted.train_seconds,
        extra={
            "wall_seconds": fitted.wall_seconds,
            "wall_nodes_per_s": fitted.samples / fitted.wall_seconds
            if fitted.wall_seconds
            else 0.0,
            "workers": workers,
            "mode": cfg.mode.value,
            "peak_rss_bytes": fitted.peak_rss_bytes,
            "resumed_from_epoch": fitted.resumed_from_epoch,
        },
    )


def train_on_facility(
    model: nn.Module,
    data: GraphTensors,
    cfg: TrainConfig,
    dist: DistributedParams,
    runner: Callable[[TrainJob, DistributedParams], FitResult] | None = None,
    *,
    on_epoch: EpochCallback | None = None,
    check_cancelled: Callable[[], None] | None = None,
) -> TrainResult:
    """Train ``model`` in place on the facility; ``runner`` defaults to a plain :func:`fit`.

    Sync mode is sampled mini-batches split across ranks, so its job samples like ``sampled``.
    """
    job_cfg = (
        cfg if cfg.mode is not TrainMode.SYNC else dataclasses.replace(cfg, mode=TrainMode.SAMPLED)
    )
    job = GraphJob(data, model, job_cfg)
    if runner is None:
        fitted = fit(
            job, dist, threads=dist.world_size, on_epoch=on_epoch, check_cancelled=check_cancelled
        )
    else:
        fitted = runner(job, dist)
    model.load_state_dict(fitted.state)
    return to_train_result(fitted, cfg, dist.world_size)
