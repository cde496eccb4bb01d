"""Feature and edge attributions for a GNN node classifier's prediction.

Built on PyG's explainability module (``torch_geometric.explain``): integrated gradients
through ``CaptumExplainer`` (deterministic, with a completeness gap) or ``GNNExplainer``
(a learned soft mask, seeded). Only the node's receptive field (its neighbourhood
within ``layers + 1`` hops) goes through the explainer: outside it nothing can change the prediction,
and a whole graph would make each step cost the graph.

Fidelity is measured as a probability drop, since PyG's own fidelity for one node is 0 or 1:
fidelity+ is how much the predicted class's probability falls when the ``k`` most important
edges are removed, to be compared with removing ``k`` random edges.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from open_autoglm.ml.explain.base import Family, register_explainer, top_items

__all__ = ["NodeExplanation", "explain_node", "fidelity_plus"]


class NodeExplanation:
    """One node's explanation on its receptive field (indices local to ``subset``).

    Args:
        index: the node's position in ``subset``.
        subset: global indices of the receptive field's nodes, ``(n,)``.
        edge_index: the field's edges in local indices, ``(2, e)``.
        edge_scores: importance per edge, ``(e,)``.
        feature_scores: importance per input feature summed over the field's nodes, ``(F,)``.
        node_scores: importance per field node summed over its features, ``(n,)``.
        carries: which edges carry a message that can reach the node within ``layers`` hops,
            ``(e,)``; the others only shape degrees, and their importance is noise.
    """

    def __init__(
        self,
        index: int,
        subset: Any,
        edge_index: Any,
        edge_scores: Any,
        feature_scores: Any,
        node_scores: Any,
        prediction: int,
        probability: float,
        method: str,
        carries: Any,
    ) -> None:
        self.index = index
        self.subset = subset
        self.edge_index = edge_index
        self.edge_scores = edge_scores
        self.feature_scores = feature_scores
        self.node_scores = node_scores
        self.prediction = prediction
        self.probability = probability
        self.method = method
        self.carries = carries

    def top_edges(self, k: int) -> list[tuple[int, int]]:
        """The ``k`` most important message-carrying edges as global ``(src, dst)`` pairs,
        ties by position."""
        carrying = [i for i in range(self.edge_scores.numel()) if bool(self.carries[i])]
        order = sorted(carrying, key=lambda i: (-float(self.edge_scores[i]), i))
        return [
            (int(self.subset[self.edge_index[0, i]]), int(self.subset[self.edge_index[1, i]]))
            for i in order[:k]
        ]


def _receptive_field(node: int, layers: int, edge_index: Any, num_nodes: int) -> Any:
    from torch_geometric.utils import k_hop_subgraph

    subset, sub_edges, mapping, _ = k_hop_subgraph(
        node, layers, edge_index, relabel_nodes=True, num_nodes=num_nodes
    )
    return subset, sub_edges, int(mapping[0])


def _carries(edge_index: Any, index: int, layers: int, num_nodes: int) -> Any:
    """Edges ``u -> v`` with ``v`` at most ``layers - 1`` message hops from ``index``."""
    import torch

    hops = torch.full((num_nodes,), layers, dtype=torch.long)  # layers = too far
    hops[index] = 0
    for h in range(1, layers):
        near = hops[edge_index[1]] == h - 1  # edges into nodes at distance h - 1
        hops[edge_index[0, near]] = torch.minimum(hops[edge_index[0, near]], torch.tensor(h))
    return hops[edge_index[1]] <= layers - 1  # (e,)


def explain_node(
    model: Any,
    x: Any,
    edge_index: Any,
    node: int,
    *,
    layers: int,
    method: str = "integrated-gradients",
    steps: int = 32,
    epochs: int = 100,
    lr: float = 0.1,
    restarts: int = 4,
    seed: int = 0,
) -> NodeExplanation:
    """Explain ``model``'s prediction for global node index ``node``."""
    import torch
    from torch_geometric.explain import CaptumExplainer, Explainer, GNNExplainer

    # A private copy: PyG's explainers leave state on the layers (GNNExplainer registers its
    # edge mask as a parameter, after which a Captum run's mask no longer reaches the graph).
    model = copy.deepcopy(model).eval()
    for module in model.modules():
        module._parameters.pop("_edge_mask", None)  # a mask a previous explainer registered
    # layers + 1 hops: the outer ring's in-edges set its degrees (GCN) and attention weights
    subset, sub_edges, index = _receptive_field(node, layers + 1, edge_index, x.size(0))
    sub_x = x[subset]  # (n, F)
    with torch.no_grad():
        probs = torch.softmax(model(sub_x, sub_edges)[index], -1)  # (classes,)
    if method == "gnnexplainer":
        algorithm: Any = GNNExplainer(epochs=epochs, lr=lr)
    else:
        algorithm = CaptumExplainer("IntegratedGradients", n_steps=steps)
    explainer = Explainer(
        model=model,
        algorithm=algorithm,
        explanation_type="model",
        node_mask_type="attributes",
        edge_mask_type="object",
        model_config={
            "mode": "multiclass_classification",
            "task_level": "node",
            "return_type": "raw",
        },
    )
    # GNNExplainer starts from a random mask, and where many edges matter alike its top edges
    # change with the seed; the mean mask over restarts is what it agrees on.
    runs = restarts if method == "gnnexplainer" else 1
    node_mask = torch.zeros_like(sub_x)  # (n, F)
    edge_mask = torch.zeros(sub_edges.size(1))  # (e,)
    for r in range(runs):
        torch.manual_seed(seed * 1000 + r)
        found = explainer(sub_x, sub_edges, index=index)
        node_mask += found.node_mask.detach() / runs
        edge_mask += found.edge_mask.detach() / runs
    return NodeExplanation(
        index=index,
        subset=subset,
        edge_index=sub_edges,
        edge_scores=edge_mask,
        feature_scores=node_mask.sum(0),  # (F,)
        node_scores=node_mask.sum(1),  # (n,)
        prediction=int(probs.argmax()),
        probability=float(probs.max()),
        method=method,
        carries=_carries(sub_edges, index, layers, int(subset.numel())),
    )


def _prob_without(model: Any, x: Any, edge_index: Any, index: int, target: int, drop: Any) -> float:
    import torch

    keep = torch.ones(edge_index.size(1), dtype=torch.bool)
    keep[drop] = False
    with torch.no_grad():
        return float(torch.softmax(model(x, edge_index[:, keep])[index], -1)[target])


def fidelity_plus(
    model: Any,
    x: Any,
    explanation: NodeExplanation,
    k: int,
    *,
    random_draws: int = 20,
    seed: int = 0,
) -> tuple[float, float]:
    """(drop with the top-``k`` edges removed, mean drop with ``k`` random edges removed),
    both among the edges that carry messages to the node."""
    import torch

    sub_x, edges, index = x[explanation.subset], explanation.edge_index, explanation.index
    target, p = explanation.prediction, explanation.probability
    carrying = torch.nonzero(explanation.carries).flatten()  # (c,)
    k = min(k, carrying.numel())
    scores = explanation.edge_scores[carrying]
    top = carrying[torch.argsort(scores, descending=True, stable=True)[:k]]
    explained = p - _prob_without(model, sub_x, edges, index, target, top)
    g = torch.Generator().manual_seed(seed)
    drops = [
        p
        - _prob_without(
            model,
            sub_x,
            edges,
            index,
            target,
            carrying[torch.randperm(carrying.numel(), generator=g)[:k]],
        )
        for _ in range(random_draws)
    ]
    return explained, sum(drops) / len(drops)


@register_explainer(Family.GRAPH)
def explain_nodes(
    model: Any,
    x: Any,
    edge_index: Any,
    nodes: Sequence[int],
    *,
    id_of: Sequence[Any],
    layers: int,
    classes: Sequence[str],
    method: str = "integrated-gradients",
    steps: int = 32,
    epochs: int = 100,
    seed: int = 0,
    top_k: int = 10,
    feature_names: Sequence[str] | None = None,
    on_text: Any = None,
    **_: Any,
) -> dict[str, Any]:
    """Explain each node (``id_of`` maps a node index to its id); with several, also the
    features that matter most overall."""
    import torch

    found: list[NodeExplanation] = []
    names = list(feature_names) if feature_names else [f"f{i}" for i in range(x.size(1))]
    explanations = []
    for i, node in enumerate(nodes):
        e = explain_node(
            model, x, edge_index, int(node), layers=layers, method=method, steps=steps,
            epochs=epochs, seed=seed,
        )  # fmt: skip
        found.append(e)
        plus, random_plus = fidelity_plus(model, x, e, top_k, seed=seed)
        explanations.append(
            {
                "node": id_of[int(node)],
                "label": classes[e.prediction],
                "probability": round(e.probability, 6),
                "method": method,
                "top_features": top_items(names, e.feature_scores.tolist(), top_k),
                "top_edges": [[id_of[a], id_of[b]] for a, b in e.top_edges(top_k)],
                "receptive_field": {
                    "nodes": int(e.subset.numel()),
                    "edges": int(e.edge_index.size(1)),
                },
                "fidelity_plus": round(plus, 6),
                "fidelity_plus_random": round(random_plus, 6),
            }
        )
        if on_text is not None:
            on_text(i + 1, len(nodes))
    out: dict[str, Any] = {
        "family": Family.GRAPH.value,
        "explanations": explanations,
        "_nodes": found,
    }
    if len(found) > 1:
        mean = torch.stack([e.feature_scores for e in found]).mean(0)
        out["global"] = {
            "nodes": len(found),
            "top_features": top_items(names, mean.tolist(), top_k),
        }
    return out
