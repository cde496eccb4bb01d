"""GCN node classifier (Kipf & Welling 2017) on torch-geometric's ``GCNConv``."""

from __future__ import annotations

from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import GCNConv

__all__ = ["GCN"]


class GCN(nn.Module):
    """Stacked ``GCNConv`` layers with ReLU; dropout before every layer, as in the paper.

    Args:
        in_dim: input feature size.
        out_dim: number of classes.
        hidden: hidden size of every inner layer.
        layers: number of graph convolutions (>= 1).
        dropout: drop probability on the input of each layer.
    """

    def __init__(
        self, in_dim: int, out_dim: int, *, hidden: int = 16, layers: int = 2, dropout: float = 0.5
    ) -> None:
        super().__init__()
        dims = [in_dim] + [hidden] * (layers - 1) + [out_dim]
        # cached=False: the same module also runs on sampled subgraphs, whose norm differs
        self.convs = nn.ModuleList(GCNConv(a, b, cached=False) for a, b in pairwise(dims))
        self.dropout = dropout

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        """Return logits (nodes, out_dim) for features (nodes, in_dim) and edges (2, E)."""
        for i, conv in enumerate(self.convs):
            x = F.dropout(x, p=self.dropout, training=self.training)
            x = conv(x, edge_index)  # (nodes, dims[i + 1])
            if i < len(self.convs) - 1:
                x = torch.relu(x)
        return x
