"""Training a fusion model: mini-batches, AdamW, early stopping on a validation split.

One loop serves every strategy (each brings its own :meth:`FusionModel.loss`). The best
epoch by validation loss is kept; ``on_epoch`` reports each epoch (the task handler turns
it into progress events) and ``check_cancelled`` lets a cancelled job stop between batches.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from open_autoglm.ml.multimodal.batch import FusionBatch
from open_autoglm.ml.multimodal.fusion.base import FusionModel
from open_autoglm.ml.multimodal.metrics import classification_metrics

__all__ = ["FitResult", "TrainSettings", "evaluate", "fit", "stratified_split"]


@dataclass(frozen=True)
class TrainSettings:
    epochs: int = 30
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 1e-4
    patience: int = 5  # epochs without a better validation loss before stopping; 0 = never
    seed: int = 0


@dataclass
class FitResult:
    state: dict[str, torch.Tensor]
    best_epoch: int
    history: list[dict[str, float]] = field(default_factory=list)


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


def fit(
    model: FusionModel,
    batch: FusionBatch,
    labels: torch.Tensor,
    train_rows: np.ndarray,
    val_rows: np.ndarray,
    settings: TrainSettings,
    *,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    check_cancelled: Callable[[], None] | None = None,
) -> FitResult:
    """Train ``model`` on ``train_rows`` of ``batch``; keep the best epoch on ``val_rows``."""
    torch.manual_seed(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    train_idx = torch.from_numpy(train_rows).long()
    val_batch, val_labels = batch.select(torch.from_numpy(val_rows).long()), labels[val_rows]
    best = float("inf")
    result = FitResult(state={}, best_epoch=-1)
    stale = 0
    for epoch in range(settings.epochs):
        model.train()
        order = train_idx[torch.randperm(len(train_idx), generator=generator)]
        total, seen = 0.0, 0
        for start in range(0, len(order), settings.batch_size):
            if check_cancelled is not None:
                check_cancelled()
            rows = order[start : start + settings.batch_size]
            loss = model.loss(batch.select(rows), labels[rows])
            opt.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            total += float(loss.detach()) * len(rows)
            seen += len(rows)
        model.eval()
        with torch.no_grad():
            val_loss = float(torch.nn.functional.cross_entropy(model(val_batch), val_labels))
        val = evaluate(model, val_batch, val_labels)
        record = {
            "epoch": epoch,
            "loss": total / max(seen, 1),
            "val_loss": val_loss,
            **{f"val_{k}": v for k, v in val.items() if k != "latency_ms_per_row"},
        }
        result.history.append(record)
        if on_epoch is not None:
            on_epoch(epoch, record)
        if val_loss < best - 1e-4:
            best, stale, result.best_epoch = val_loss, 0, epoch
            result.state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
            if settings.patience and stale >= settings.patience:
                break
    model.load_state_dict(result.state)
    model.eval()
    return result


def evaluate(model: FusionModel, batch: FusionBatch, labels: torch.Tensor) -> dict[str, Any]:
    """Metrics of ``model`` on ``batch`` and its latency per row (the fusion model only: the
    sentence embeddings are computed before)."""
    start = time.perf_counter()
    proba = model.predict_proba(batch)  # (rows, classes)
    seconds = time.perf_counter() - start
    out: dict[str, Any] = classification_metrics(labels.numpy(), proba.numpy())
    out["latency_ms_per_row"] = 1000 * seconds / max(len(batch), 1)
    return out
