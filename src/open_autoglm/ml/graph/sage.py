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

__all__ = ["GraphSAGE"]


class GraphSAGE(nn.Module):
    """Stacked mean-aggregator ``SAGEConv`` layers with ReLU and dropout between them."""

    def __init__(
        self, in_dim: int, out_dim: int, *, hidden: int = 64, layers: int = 2, dropout: float = 0.5
    ) -> None:
        super().__init__()
        dims = [in_dim] + [hidden] * (layers - 1) + [out_dim]
        self.convs = nn.ModuleList(SAGEConv(a, b, aggr="mean") for a, b in pairwise(dims))
        self.dropout = dropout

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        """Return logits (nodes, out_dim) for features (nodes, in_dim) and edges (2, E)."""
        for i, conv in enumerate(self.convs):
            x = F.dropout(x, p=self.dropout, training=self.training)
            x = conv(x, edge_index)  # (nodes, dims[i + 1])
            if i < len(self.convs) - 1:
                x = torch.relu(x)
        return x
