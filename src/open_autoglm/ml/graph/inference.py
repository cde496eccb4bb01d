"""Score some nodes of a graph by running the model on their receptive field only.

A model of ``L`` message-passing layers reads nothing farther than ``L`` hops from a node,
and its normalisations read the in-degree of every node within ``L`` hops (GCN's symmetric
norm reads the source's degree, SAGE's mean and GAT's softmax the target's). So the model
is run on every in-edge of every node within ``L`` hops of the requested ones: the
requested rows come out as on the whole graph (up to float summation order), at a cost
that grows with the neighbourhood, not the graph.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from open_autoglm.ml.graph.sampler import CSRGraph, NeighborSampler

__all__ = ["predict_proba"]


@torch.no_grad()
def predict_proba(
    model: nn.Module, x: Tensor, edge_index: Tensor, hops: int, nodes: Tensor | None = None
) -> Tensor:
    """Class probabilities (len(nodes), classes) of ``nodes`` (default: all, in order).

    Args:
        x: (num_nodes, features); edge_index: (2, E), messages flow row 0 -> row 1.
        hops: the model's number of message-passing layers.
        nodes: int64 node ids, repeats allowed.
    """
    model.eval()
    if nodes is None:
        return torch.softmax(model(x, edge_index), dim=1)  # (nodes, classes)
    seeds, back = torch.unique(nodes, return_inverse=True)  # the sampler wants distinct seeds
    csr = CSRGraph.from_edge_index(edge_index, int(x.shape[0]))
    # fan-out -1 = every in-edge; hops + 1 rounds reach the in-edges of the L-hop ring
    sub = NeighborSampler(csr, [-1] * (hops + 1)).sample(seeds)
    logits = model(x[sub.n_id], sub.edge_index)[: sub.batch_size]  # (seeds, classes)
    return torch.softmax(logits, dim=1)[back]
