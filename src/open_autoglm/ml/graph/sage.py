"""GraphSAGE node classifier (Hamilton et al. 2017) on torch-geometric's ``SAGEConv``.

Inductive: weights do not depend on the node set, so a trained model can score nodes
that were added after training.
"""

from __future__ import annotations

from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import SAGEConv
from torch_geometric.utils import scatter

from open_autoglm.ml.graph.features import SparseFeatures

__all__ = ["GraphSAGE"]


def _sparse_sage(conv: SAGEConv, x: SparseFeatures, edge_index: Tensor) -> Tensor:
    """``conv(x.to_dense(), edge_index)`` without densifying: project, then average.

    The neighbour mean and the linear map commute, ``W mean(x_j) = mean(W x_j)``, so both
    weights apply to the sparse rows first and the mean runs over ``out`` columns instead
    of the feature width.
    """
    out = conv.out_channels
    w = torch.cat([conv.lin_l.weight, conv.lin_r.weight])  # (2 * out, features)
    h = x.linear(w)  # (nodes, 2 * out)
    neigh, root = h[:, :out], h[:, out:]
    src, dst = edge_index
    agg: Tensor = scatter(neigh[src], dst, dim=0, dim_size=h.shape[0], reduce="mean")
    bias: Tensor = conv.lin_l.bias
    return agg + bias + root  # (nodes, out)


class GraphSAGE(nn.Module):
    """Stacked mean-aggregator ``SAGEConv`` layers with ReLU and dropout between them.

    ``forward`` also takes :class:`SparseFeatures` for ``x``: same function, O(nonzeros)
    first layer.
    """

    sparse_features = True  # forward accepts SparseFeatures

    def __init__(
        self, in_dim: int, out_dim: int, *, hidden: int = 64, layers: int = 2, dropout: float = 0.5
    ) -> None:
        super().__init__()
        dims = [in_dim] + [hidden] * (layers - 1) + [out_dim]
        self.convs = nn.ModuleList(SAGEConv(a, b, aggr="mean") for a, b in pairwise(dims))
        self.dropout = dropout

    def forward(self, x: Tensor | SparseFeatures, edge_index: Tensor) -> Tensor:
        """Return logits (nodes, out_dim) for features (nodes, in_dim) and edges (2, E)."""
        first = self.convs[0]
        if isinstance(x, SparseFeatures):
            h = _sparse_sage(first, x.dropout(self.dropout, self.training), edge_index)
        else:
            h = first(F.dropout(x, p=self.dropout, training=self.training), edge_index)
        for conv in self.convs[1:]:  # (nodes, hidden) in, (nodes, dims[i + 1]) out
            h = F.dropout(torch.relu(h), p=self.dropout, training=self.training)
            h = conv(h, edge_index)
        return h
