"""GAT node classifier (Veličković et al. 2018) on torch-geometric's ``GATConv``."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import GATConv

__all__ = ["GAT"]


class GAT(nn.Module):
    """Multi-head attention layers with ELU; the last layer averages ``out_heads`` heads.

    Args:
        hidden: size per head of inner layers (the paper's 8).
        heads: heads of inner layers, concatenated (the paper's 8).
        out_heads: heads of the output layer, averaged (1 on Cora/CiteSeer).
        dropout: on each layer's input and on the attention coefficients.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        *,
        hidden: int = 8,
        layers: int = 2,
        dropout: float = 0.6,
        heads: int = 8,
        out_heads: int = 1,
    ) -> None:
        super().__init__()
        convs: list[GATConv] = []
        width = in_dim
        for _ in range(layers - 1):
            convs.append(GATConv(width, hidden, heads=heads, dropout=dropout))
            width = hidden * heads  # heads are concatenated
        convs.append(GATConv(width, out_dim, heads=out_heads, concat=False, dropout=dropout))
        self.convs = nn.ModuleList(convs)
        self.dropout = dropout

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        """Return logits (nodes, out_dim) for features (nodes, in_dim) and edges (2, E)."""
        for i, conv in enumerate(self.convs):
            x = F.dropout(x, p=self.dropout, training=self.training)
            x = conv(x, edge_index)  # (nodes, hidden * heads) inside, (nodes, out_dim) last
            if i < len(self.convs) - 1:
                x = F.elu(x)
        return x
