"""Sync (DDP over gloo, on the training facility) and async (Hogwild) training with two
worker processes."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from helpers.graphs import community_graph
from helpers.polling import alive_after
from helpers.training_jobs import kill_supervisor, supervise_long_hogwild
from open_autoglm.ml.graph.data import GraphTensors
from open_autoglm.ml.graph.models import ModelConfig, ModelKind, build_model
from open_autoglm.ml.graph.parallel import train_parallel
from open_autoglm.ml.graph.step_timing import PHASES
from open_autoglm.ml.graph.training import TrainConfig, TrainMode, evaluate
from open_autoglm.spec.graph import parse_graph

torch.set_num_threads(1)


@pytest.mark.parametrize("mode", [TrainMode.SYNC, TrainMode.ASYNC])
def test_two_workers_learn(mode: TrainMode) -> None:
    data = GraphTensors.from_graph(parse_graph(community_graph()))
    torch.manual_seed(0)
    model = build_model(
        ModelConfig(ModelKind.SAGE, int(data.x.shape[1]), 3, hidden=16, dropout=0.2)
    )
    before = {k: v.clone() for k, v in model.state_dict().items()}
    epochs: list[int] = []
    cfg = TrainConfig(
        epochs=25, lr=0.02, mode=mode, batch_size=8, fanout=(5, 5), workers=2, patience=30
    )
    res = train_parallel(model, data, cfg, on_epoch=lambda e, m: epochs.append(e))
    assert epochs == list(range(len(res.history))) and len(epochs) == 25
    assert res.metrics["test_acc"] >= 0.8, res.metrics
    assert res.nodes_per_second > 0 and res.extra["workers"] == 2
    # sync: every global batch of 8 split over 2 ranks (a 1-node tail batch is skipped)
    n = data.train_idx.numel()
    assert res.train_nodes == 25 * (n - (1 if n % 8 == 1 else 0)) or mode == TrainMode.ASYNC
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(torch.equal(v, res.state[k]) for k, v in model.state_dict().items())
    if mode == TrainMode.ASYNC:  # where each Hogwild worker's time went
        rows = res.extra["breakdown"]
        assert [r["rank"] for r in rows] == [0.0, 1.0]
        for r in rows:
            assert set(PHASES) <= set(r) and all(r[p] >= 0 for p in PHASES)
            assert r["compute"] > 0 and r["span"] > 0 and r["allreduce"] == 0
    assert 0 < res.extra["wall_nodes_per_s"] <= res.nodes_per_second * 1.01


@pytest.mark.parametrize("mode", [TrainMode.SYNC, TrainMode.ASYNC])
def test_parent_early_stopping_ends_both_modes(mode: TrainMode) -> None:
    clean = GraphTensors.from_graph(parse_graph(community_graph()))
    # validation labels shifted by one class: the better the fit, the worse validation gets
    y = clean.y.clone()
    y[clean.val_idx] = (y[clean.val_idx] + 1) % 3
    data = dataclasses.replace(clean, y=y)
    torch.manual_seed(0)
    model = build_model(ModelConfig(ModelKind.SAGE, int(data.x.shape[1]), 3, hidden=8))
    cfg = TrainConfig(
        epochs=2000, lr=0.05, mode=mode, batch_size=16, fanout=(3, 3), workers=2, patience=3
    )
    res = train_parallel(model, data, cfg)
    epochs = [int(h["epoch"]) for h in res.history]
    assert epochs == list(range(len(epochs))) and len(epochs) < 2000
    assert res.best_epoch in epochs
    assert res.metrics == res.history[res.best_epoch]
    # the parent's evaluation of the returned weights gives the best epoch's metrics
    assert evaluate(model, data)["val_acc"] == pytest.approx(res.metrics["val_acc"])


def test_rejects_single_process_modes() -> None:
    with pytest.raises(ValueError, match="sync or async"):
        train_parallel(torch.nn.Linear(1, 1), None, TrainConfig(mode=TrainMode.FULL))  # type: ignore[arg-type]


def test_hogwild_workers_die_with_their_supervisor() -> None:
    """A cancelled or killed graph-train task must not leave async workers training on."""
    assert alive_after(kill_supervisor(supervise_long_hogwild)) == []
