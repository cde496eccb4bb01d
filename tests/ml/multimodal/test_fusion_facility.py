"""Fusion training on the shared training facility: two DDP ranks train the very model one
process trains, strategy by strategy, and early stopping keeps fusion's rule."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from open_autoglm.ml.multimodal.batch import FusionBatch, FusionConfig
from open_autoglm.ml.multimodal.fusion import strategy_class
from open_autoglm.ml.multimodal.training import FusionJob, TrainSettings, fit, stratified_split
from open_autoglm.ml.training.fit import FitResult
from open_autoglm.ml.training.fit import fit as facility_fit
from open_autoglm.ml.training.spec import DistributedParams

# dropout 0: ranks draw their own dropout masks, so only a dropout-free model can match
CONFIG = FusionConfig(
    text_dim=8, cardinalities=(3,), numeric=1, classes=2, hidden=16, shared=8, heads=2, dropout=0.0
)
SETTINGS = TrainSettings(epochs=2, batch_size=32, lr=5e-3, patience=0, seed=0)


def _table(rows: int = 160) -> tuple[FusionBatch, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    text = torch.randn(rows, 8, generator=g)
    cat = torch.randint(0, 2, (rows, 1), generator=g)
    labels = ((text[:, 0] > 0).long() ^ cat[:, 0]).long()
    present = torch.rand(rows, generator=g) > 0.2  # some rows lack text
    batch = FusionBatch(
        text * present[:, None],
        present,
        cat,
        torch.randn(rows, 1, generator=g),
        torch.ones(rows, dtype=torch.bool),
    )
    return batch, labels


def _job(name: str, settings: TrainSettings = SETTINGS) -> FusionJob:
    batch, labels = _table()
    train, val, _ = stratified_split(labels.numpy(), [0.7, 0.15, 0.15], seed=0)
    torch.manual_seed(0)
    return FusionJob(strategy_class(name)(CONFIG), batch, labels, train, val, settings)


def _run(name: str, dist: DistributedParams) -> tuple[list[float], FitResult]:
    losses: list[float] = []
    result = facility_fit(
        _job(name), dist, threads=dist.world_size, on_step=lambda e: losses.append(e.loss)
    )
    return losses, result


@pytest.mark.parametrize("name", ["hybrid", "late"])
def test_ddp_x2_trains_what_one_process_trains(name: str) -> None:
    ref_losses, ref = _run(name, DistributedParams())
    losses, result = _run(name, DistributedParams(strategy="ddp", world_size=2))
    assert len(losses) == len(ref_losses) == 2 * 4  # 112 training rows / 32: 4 steps an epoch
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-4)
    assert result.best_epoch == ref.best_epoch
    for key in ("val_loss", "val_accuracy", "val_macro_f1"):
        assert result.metrics[key] == pytest.approx(ref.metrics[key], rel=1e-4, abs=1e-6)
    for key, value in ref.state.items():
        torch.testing.assert_close(result.state[key], value, rtol=1e-3, atol=1e-4)


def test_fit_trains_in_place_and_stops_on_fusion_rule() -> None:
    job = _job("hybrid", TrainSettings(epochs=40, batch_size=32, lr=5e-2, patience=2, seed=0))
    model = job.template
    result = fit(job)
    history = result.history
    assert len(history) < 40  # patience 2 stopped it
    best = min(h["val_loss"] for h in history)
    # stopped two epochs after the best, none of which beat it by more than min_delta
    assert history[result.best_epoch]["val_loss"] == best
    assert len(history) == result.best_epoch + 1 + 2
    torch.testing.assert_close(model.state_dict(), result.state)
