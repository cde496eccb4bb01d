"""Training a temporal link predictor: contrastive BCE with random negatives, chronologically.

Each epoch resets the model's state and walks the training events in time order: a batch's
positives and one random negative destination each are scored from the state before the
batch, the loss is binary cross-entropy (positives against negatives), and then the batch is
observed. AdamW with cosine annealing over the epochs; after each epoch the validation walk
(random negatives, transductive) gives the AP early stopping watches. Seeded throughout.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from open_autoglm.ml.temporal.evaluation import ModuleScorer, evaluate_split, walk_batches
from open_autoglm.ml.temporal.history import EventHistory
from open_autoglm.ml.temporal.negatives import NegativeStrategy
from open_autoglm.ml.temporal.split import ChronologicalSplit
from open_autoglm.ml.training.fit import FitResult
from open_autoglm.spec.events import EventStream

__all__ = ["TemporalTrainConfig", "TemporalTrainResult", "model_weights", "train_link_predictor"]

EpochCallback = Callable[[int, dict[str, float]], None]


@dataclass(frozen=True)
class TemporalTrainConfig:
    epochs: int = 10
    lr: float = 1e-4
    weight_decay: float = 1e-4
    batch_size: int = 200
    patience: int = 3  # epochs without a better validation AP before stopping (0 = never)
    seed: int = 0


class TemporalTrainResult(FitResult):
    """The training facility's result shape, read in events (a temporal sample is an event)."""

    @property
    def best_val_ap(self) -> float:
        return float(self.metrics.get("val_ap", -1.0))

    @property
    def events_per_second(self) -> float:
        return self.samples_per_s


def model_weights(model: nn.Module) -> dict[str, Tensor]:
    """Learned tensors only (TGN's per-node state is rebuilt from events)."""
    own = getattr(model, "weights", None)
    state = own() if callable(own) else model.state_dict()
    return {k: v.detach().clone() for k, v in state.items()}


def train_link_predictor(
    model: nn.Module,
    stream: EventStream,
    split: ChronologicalSplit,
    cfg: TemporalTrainConfig,
    *,
    on_epoch: EpochCallback | None = None,
    check_cancelled: Callable[[], None] | None = None,
) -> TemporalTrainResult:
    """Train ``model`` (TGAT or TGN) on ``split.train`` and keep the best-validation weights."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    if hasattr(model, "rng"):  # TGAT's neighbour sampling and DropEdge
        setattr(model, "rng", np.random.default_rng(cfg.seed + 1))  # noqa: B010
    train_hist = EventHistory.of(stream, split.train)
    full_hist = EventHistory.of(stream)
    train_ids = np.flatnonzero(split.train)
    dst_pool = np.unique(stream.dst[train_ids])
    src_all, dst_all, t_all = stream.src, stream.dst, stream.t
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(cfg.epochs, 1))
    history: list[dict[str, float]] = []
    best_state = model_weights(model)
    best_ap, best_epoch, bad = -1.0, -1, 0
    seen, busy = 0, 0.0
    scorer = ModuleScorer(model)
    for epoch in range(cfg.epochs):
        model.train()
        model.reset_state()  # type: ignore[operator]
        model.set_history(train_hist)  # type: ignore[operator]
        losses: list[float] = []
        t0 = time.perf_counter()
        for ids in walk_batches(train_ids, cfg.batch_size):
            if check_cancelled is not None:
                check_cancelled()
            s, d, t = src_all[ids], dst_all[ids], t_all[ids]
            neg = dst_pool[rng.integers(0, dst_pool.size, ids.size)]
            src_t = torch.from_numpy(np.concatenate([s, s]))
            dst_t = torch.from_numpy(np.concatenate([d, neg]))
            logits = model(src_t, dst_t, np.concatenate([t, t]))  # (2B,)
            target = torch.cat([torch.ones(ids.size), torch.zeros(ids.size)])
            loss = F.binary_cross_entropy_with_logits(logits, target)
            opt.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            model.observe(torch.from_numpy(s), torch.from_numpy(d), t, torch.from_numpy(ids))  # type: ignore[operator]
            model.detach_state()  # type: ignore[operator]
            losses.append(float(loss.detach()))
            seen += ids.size
        busy += time.perf_counter() - t0
        sched.step()
        val = evaluate_split(
            scorer, stream, split, strategies=(NegativeStrategy.RANDOM,), parts=("val",),
            batch_size=cfg.batch_size, seed=cfg.seed, train_history=train_hist,
            full_history=full_hist, check_cancelled=check_cancelled,
        )  # fmt: skip
        val_ap = val["val_transductive_random_ap"]
        metrics = {
            "epoch": float(epoch),
            "loss": float(np.mean(losses)) if losses else float("nan"),
            "val_ap": val_ap,
            "val_auc": val["val_transductive_random_auc"],
            "events_per_s": seen / busy if busy > 0 else 0.0,
            "lr": float(sched.get_last_lr()[0]),
        }
        history.append(metrics)
        if val_ap > best_ap:
            best_ap, best_epoch, bad = val_ap, epoch, 0
            best_state = model_weights(model)
        else:
            bad += 1
        if on_epoch is not None:
            on_epoch(epoch, metrics)
        if cfg.patience and bad >= cfg.patience:
            break
    model.load_state_dict(best_state, strict=False)
    return TemporalTrainResult(
        history=history,
        best_epoch=best_epoch,
        metrics=history[best_epoch] if best_epoch >= 0 else {},
        state=best_state,
        samples=seen,
        train_seconds=busy,
    )
