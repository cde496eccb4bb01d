"""Faithfulness of GNN explanations: fidelity against random edges, determinism, stability
of GNNExplainer across seeds."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from helpers.graphs import community_graph
from open_autoglm.ml.explain.graph import explain_node, explain_nodes, fidelity_plus
from open_autoglm.ml.graph.data import GraphTensors
from open_autoglm.ml.graph.models import ModelConfig, ModelKind, build_model
from open_autoglm.spec.graph import parse_graph


@pytest.fixture(scope="module")
def trained() -> tuple[Any, Any, Any]:
    """A 2-layer GCN fitted to three communities whose features are mostly noise, so the
    neighbours (edges) matter for the prediction."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    raw = community_graph(n_per_class=30, dim=8, seed=3)
    noise = torch.Generator().manual_seed(1)
    raw["features"] = (torch.randn(90, 8, generator=noise) * 2).tolist()
    data = GraphTensors.from_graph(parse_graph(raw), normalize=False)
    model = build_model(ModelConfig(ModelKind.GCN, in_dim=8, out_dim=3, hidden=16, dropout=0.0))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02, weight_decay=5e-4)
    labels = torch.tensor([["alpha", "beta", "gamma"].index(c) for c in raw["labels"]])
    for _ in range(150):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(data.x, data.edge_index), labels)
        loss.backward()
        optimizer.step()
    return model.eval(), data.x, data.edge_index


NODES = [0, 17, 31, 44, 62, 80]


@pytest.mark.parametrize("method", ["integrated-gradients", "gnnexplainer"])
def test_top_edges_matter_more_than_random_ones(trained: Any, method: str) -> None:
    model, x, edge_index = trained
    explained, random = 0.0, 0.0
    for node in NODES:
        e = explain_node(model, x, edge_index, node, layers=2, method=method, steps=32, seed=0)
        plus, rand = fidelity_plus(model, x, e, k=5, random_draws=20, seed=0)
        explained, random = explained + plus, random + rand
    # Integrated gradients names the edges the prediction needs; GNNExplainer optimises for
    # edges that suffice, so with redundant neighbours its removal drop is smaller, yet it
    # must still beat random edges.
    margin = 0.05 * len(NODES) if method == "integrated-gradients" else 0.0
    assert explained > random + margin, (explained, random)


def test_same_seed_same_explanation(trained: Any) -> None:
    model, x, edge_index = trained
    for method in ("integrated-gradients", "gnnexplainer"):
        a = explain_node(model, x, edge_index, 17, layers=2, method=method, epochs=50, seed=4)
        b = explain_node(model, x, edge_index, 17, layers=2, method=method, epochs=50, seed=4)
        assert torch.equal(a.edge_scores, b.edge_scores)
        assert torch.equal(a.feature_scores, b.feature_scores)


def test_gnnexplainer_top_edges_agree_across_seeds_far_above_chance(trained: Any) -> None:
    # Where many neighbours push the same way (a community graph), GNNExplainer's top edges
    # are not unique; across seeds they still overlap several times more than random picks.
    model, x, edge_index = trained
    for node in (31, 62):
        found = [
            explain_node(model, x, edge_index, node, layers=2, method="gnnexplainer", seed=s)
            for s in range(5)
        ]
        tops = [set(e.top_edges(10)) for e in found]
        pairs = [(a, b) for i, a in enumerate(tops) for b in tops[i + 1 :]]
        mean = sum(len(a & b) / len(a | b) for a, b in pairs) / len(pairs)
        share = 10 / int(found[0].carries.sum())
        chance = share / (2 - share)  # expected Jaccard of two random 10-edge picks
        assert mean >= 0.3 and mean >= 2.5 * chance, (node, mean, chance)


def test_receptive_field_keeps_the_prediction(trained: Any) -> None:
    model, x, edge_index = trained
    with torch.no_grad():
        whole = torch.softmax(model(x, edge_index), -1)
    for node in NODES:
        e = explain_node(model, x, edge_index, node, layers=2, steps=8)
        assert e.prediction == int(whole[node].argmax())
        assert e.probability == pytest.approx(float(whole[node].max()), abs=1e-5)


def test_several_nodes_give_a_global_feature_ranking(trained: Any) -> None:
    model, x, edge_index = trained
    ids = [f"n-{i}" for i in range(x.size(0))]
    out = explain_nodes(
        model, x, edge_index, NODES[:3], id_of=ids, layers=2, classes=["a", "b", "c"], steps=8
    )
    assert [e["node"] for e in out["explanations"]] == ["n-0", "n-17", "n-31"]
    assert len(out["global"]["top_features"]) == 8
    assert all(
        len(edge) == 2 and edge[0].startswith("n-") for edge in out["explanations"][0]["top_edges"]
    )
