"""Models and the single-process trainer: shapes, learning, early stopping, reproducibility."""

from __future__ import annotations

import pytest
import torch

from helpers.graphs import community_graph
from open_autoglm.ml.graph.data import GraphTensors, row_normalize
from open_autoglm.ml.graph.models import ModelConfig, ModelKind, build_model
from open_autoglm.ml.graph.training import (
    EarlyStopping,
    TrainConfig,
    TrainMode,
    train_node_classifier,
)
from open_autoglm.spec.graph import parse_graph

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def data() -> GraphTensors:
    return GraphTensors.from_graph(parse_graph(community_graph(seed=0)), seed=0)


def config(kind: ModelKind, data: GraphTensors, **kw: object) -> ModelConfig:
    return ModelConfig(kind, int(data.x.shape[1]), data.num_classes, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", list(ModelKind))
@pytest.mark.parametrize("layers", [1, 3])
def test_forward_shapes(kind: ModelKind, layers: int, data: GraphTensors) -> None:
    model = build_model(config(kind, data, hidden=8, layers=layers, heads=2))
    out = model(data.x, data.edge_index)
    assert out.shape == (data.num_nodes, 3)
    assert len(model.convs) == layers


@pytest.mark.parametrize("kind", list(ModelKind))
@pytest.mark.parametrize("mode", [TrainMode.FULL, TrainMode.SAMPLED])
def test_learns_communities(kind: ModelKind, mode: TrainMode, data: GraphTensors) -> None:
    torch.manual_seed(0)
    model = build_model(config(kind, data, hidden=16, dropout=0.2, heads=2))
    cfg = TrainConfig(epochs=40, lr=0.02, mode=mode, batch_size=16, fanout=(5, 5), seed=0)
    res = train_node_classifier(model, data, cfg)
    assert res.metrics["test_acc"] >= 0.8, res.metrics
    assert res.history[-1]["loss"] < res.history[0]["loss"]
    assert res.nodes_per_second > 0
    # the model is left holding the best epoch's weights
    assert all(torch.equal(v, res.state[k]) for k, v in model.state_dict().items())


def test_training_is_reproducible(data: GraphTensors) -> None:
    runs = []
    for _ in range(2):
        torch.manual_seed(3)
        model = build_model(config(ModelKind.SAGE, data, hidden=8))
        cfg = TrainConfig(epochs=5, mode=TrainMode.SAMPLED, batch_size=8, fanout=(3, 3), seed=3)
        runs.append(train_node_classifier(model, data, cfg))
    assert [h["loss"] for h in runs[0].history] == [h["loss"] for h in runs[1].history]
    assert all(torch.equal(v, runs[1].state[k]) for k, v in runs[0].state.items())


def test_early_stopping_rule() -> None:
    es = EarlyStopping(patience=2)
    assert es.update(0, 0.5, 1.0)
    assert not es.update(1, 0.6, 1.1)  # acc up, loss up: patience resets, no checkpoint
    assert es.bad_epochs == 0 and es.best_epoch == 0
    assert es.update(2, 0.6, 0.9)  # neither worse: checkpoint
    es.update(3, 0.4, 2.0)
    es.update(4, 0.4, 2.0)
    assert es.should_stop and es.best_epoch == 2
    assert not EarlyStopping(patience=0).should_stop


def test_early_stopping_ends_training(data: GraphTensors) -> None:
    torch.manual_seed(0)
    model = build_model(config(ModelKind.GCN, data, hidden=8))
    res = train_node_classifier(model, data, TrainConfig(epochs=500, lr=0.05, patience=5))
    assert len(res.history) < 500
    assert len(res.history) - 1 - res.best_epoch >= 5  # stopped `patience` epochs after it
    assert res.history[res.best_epoch] == res.metrics


def test_row_normalize_keeps_zero_rows() -> None:
    x = torch.tensor([[1.0, 3.0], [0.0, 0.0]])
    assert row_normalize(x).tolist() == [[0.25, 0.75], [0.0, 0.0]]


def test_default_split_without_stored_split(data: GraphTensors) -> None:
    n = data.train_idx.numel() + data.val_idx.numel() + data.test_idx.numel()
    assert n == data.num_nodes
    assert not set(data.train_idx.tolist()) & set(data.test_idx.tolist())
