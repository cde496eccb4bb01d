"""Training a fusion model on the training facility: mini-batches, AdamW, early stopping.

:class:`FusionJob` tells the facility (:mod:`open_autoglm.ml.training`) what to train; every
strategy brings its own :meth:`FusionModel.sample_losses`, and the facility's one loop runs
it in one process or as DDP/FSDP ranks. The best epoch by validation loss is kept.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from open_autoglm.ml.multimodal.batch import FusionBatch
from open_autoglm.ml.multimodal.fusion.base import FusionModel
from open_autoglm.ml.multimodal.metrics import classification_metrics
from open_autoglm.ml.training.fit import FitResult
from open_autoglm.ml.training.fit import fit as train
from open_autoglm.ml.training.job import TrainJob
from open_autoglm.ml.training.spec import DistributedParams

__all__ = ["FusionJob", "Runner", "TrainSettings", "evaluate", "fit", "stratified_split"]


@dataclass(frozen=True)
class TrainSettings:
    epochs: int = 30
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 1e-4
    patience: int = 5  # epochs without a better validation loss before stopping; 0 = never
    seed: int = 0


def stratified_split(
    labels: Sequence[int] | np.ndarray, fractions: Sequence[float], seed: int
) -> list[np.ndarray]:
    """Row indices cut into parts of the given fractions (the last takes the rest), each
    class split in the same proportions; deterministic for a seed."""
    y = np.asarray(labels)
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in fractions]
    for c in np.unique(y):
        rows = rng.permutation(np.flatnonzero(y == c))
        bounds = np.round(np.cumsum(fractions) * len(rows)).astype(int)
        start = 0
        for k, end in enumerate(bounds):
            end = len(rows) if k == len(fractions) - 1 else int(end)
            parts[k].append(rows[start:end])
            start = end
    return [np.sort(np.concatenate(p)) for p in parts]


class FusionJob(TrainJob):
    """One fusion strategy on the training facility: a global batch is rows of the table."""

    preload = ("open_autoglm.ml.multimodal.training",)
    monitor = "val_loss"
    min_delta = 1e-4  # a better validation loss must beat the best by this much

    def __init__(
        self,
        model: FusionModel,
        batch: FusionBatch,
        labels: torch.Tensor,
        train_rows: np.ndarray,
        val_rows: np.ndarray,
        settings: TrainSettings,
    ) -> None:
        self.name = model.strategy
        self.template = model  # every rank trains a copy of these weights; fit() loads the best
        self.batch, self.labels = batch, labels
        self.train_rows = torch.as_tensor(np.asarray(train_rows), dtype=torch.long)
        self.val_rows = torch.as_tensor(np.asarray(val_rows), dtype=torch.long)
        self.settings = settings
        self.seed, self.epochs, self.patience = settings.seed, settings.epochs, settings.patience

    def build_model(self) -> nn.Module:
        return copy.deepcopy(self.template)

    def make_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        s = self.settings
        return torch.optim.AdamW(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)

    def global_batches(self, epoch: int) -> list[list[int]]:
        gen = torch.Generator().manual_seed(self.seed * 7919 + epoch)
        order = self.train_rows[torch.randperm(len(self.train_rows), generator=gen)].tolist()
        size = self.settings.batch_size
        return [order[i : i + size] for i in range(0, len(order), size)]

    def collate(self, indices: list[int], generator: torch.Generator) -> Any:
        rows = torch.tensor(indices, dtype=torch.long)
        return self.batch.select(rows), self.labels[rows]

    def sample_losses(self, model: nn.Module, batch: Any) -> Tensor:
        rows, labels = batch
        losses: Tensor = model(rows, labels)  # (batch,): through forward, which DDP/FSDP hook
        return losses

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        labels = self.labels[self.val_rows]
        logits = model(self.batch.select(self.val_rows)).float()  # (val, classes)
        proba = torch.softmax(logits, dim=-1)
        scores = classification_metrics(labels.numpy(), proba.numpy())
        return {
            "val_loss": float(F.cross_entropy(logits, labels)),
            **{f"val_{k}": v for k, v in scores.items()},
        }


Runner = Callable[[TrainJob, DistributedParams], FitResult]


def fit(
    job: FusionJob,
    dist: DistributedParams | None = None,
    *,
    runner: Runner | None = None,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    check_cancelled: Callable[[], None] | None = None,
) -> FitResult:
    """Train ``job``'s model in place, keeping its best epoch on the validation rows;
    ``runner(job, dist)`` runs the job (default: the facility's plain ``fit`` in this
    process's threads; a task passes ``run_training``)."""
    dist = dist or DistributedParams()
    if runner is not None:
        fitted = runner(job, dist)
    else:
        threads = max(torch.get_num_threads(), dist.world_size)
        fitted = train(
            job, dist, threads=threads, on_epoch=on_epoch, check_cancelled=check_cancelled
        )
    job.template.load_state_dict(fitted.state)
    job.template.eval()
    return fitted


def evaluate(model: FusionModel, batch: FusionBatch, labels: torch.Tensor) -> dict[str, Any]:
    """Metrics of ``model`` on ``batch`` and its latency per row (the fusion model only: the
    sentence embeddings are computed before)."""
    start = time.perf_counter()
    proba = model.predict_proba(batch)  # (rows, classes)
    seconds = time.perf_counter() - start
    out: dict[str, Any] = classification_metrics(labels.numpy(), proba.numpy())
    out["latency_ms_per_row"] = 1000 * seconds / max(len(batch), 1)
    return out
