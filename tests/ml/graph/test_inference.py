"""Scoring some nodes on their receptive field gives the whole-graph answer for them."""

from __future__ import annotations

import pytest
import torch

from helpers.paths import SHARED_DATA
from open_autoglm.ml.graph.data import GraphTensors
from open_autoglm.ml.graph.inference import predict_proba
from open_autoglm.ml.graph.models import ModelConfig, ModelKind, build_model
from open_autoglm.spec.graph_loaders import load_graph_npz

torch.set_num_threads(1)
DATA = SHARED_DATA / "graphs"


@pytest.fixture(scope="module")
def cora() -> GraphTensors:
    return GraphTensors.from_graph(load_graph_npz(DATA / "cora_planetoid.npz"))


@pytest.mark.parametrize("kind", list(ModelKind))
@pytest.mark.parametrize("layers", [1, 2, 3])
def test_subset_matches_whole_graph(kind: ModelKind, layers: int, cora: GraphTensors) -> None:
    torch.manual_seed(layers)
    model = build_model(
        ModelConfig(kind, int(cora.x.shape[1]), cora.num_classes, hidden=8, layers=layers, heads=2)
    )
    seen: list[int] = []
    model.register_forward_pre_hook(lambda _m, args: seen.append(int(args[0].shape[0])))
    whole = predict_proba(model, cora.x, cora.edge_index, layers)  # (nodes, classes)
    nodes = torch.tensor([5, 1701, 5, 0, 2707])  # a repeat, both ends of the id range
    part = predict_proba(model, cora.x, cora.edge_index, layers, nodes)
    assert part.shape == (5, cora.num_classes)
    torch.testing.assert_close(part, whole[nodes], atol=1e-6, rtol=1e-5)
    assert torch.equal(part.argmax(1), whole[nodes].argmax(1))
    # the subset ran on its neighbourhood, not on the 2,708-node graph
    assert seen[0] == cora.num_nodes and seen[1] < cora.num_nodes // (4 if layers < 3 else 2), seen


def test_isolated_node_and_directed_edges() -> None:
    # 0 -> 1 -> 2 -> 3 (directed), 4 isolated: node 3 depends on 1 and 2 only, with 2 layers
    x = torch.randn(5, 4)
    edge_index = torch.tensor([[0, 1, 2], [1, 2, 3]])
    for kind in ModelKind:
        torch.manual_seed(0)
        model = build_model(ModelConfig(kind, 4, 3, hidden=4, layers=2, heads=2))
        whole = predict_proba(model, x, edge_index, 2)
        part = predict_proba(model, x, edge_index, 2, torch.tensor([3, 4]))
        torch.testing.assert_close(part, whole[[3, 4]], atol=1e-6, rtol=1e-5)
