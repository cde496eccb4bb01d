"""The tabular encoder: categorical embeddings plus normalised numerics, then an MLP.

Every column becomes one feature token of width ``category_dim`` (a categorical column through
its embedding table, a numeric one as ``value * w + b``), so the same tokens serve the MLP
(flattened) and the cross-modal attention of hybrid fusion (as a sequence).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["TabularEncoder"]


class TabularEncoder(nn.Module):
    """(batch, n_categorical) long + (batch, n_numeric) float -> (batch, hidden)."""

    def __init__(
        self, cardinalities: tuple[int, ...], numeric: int, dim: int, hidden: int, dropout: float
    ) -> None:
        super().__init__()
        self.embeddings = nn.ModuleList(nn.Embedding(c, dim) for c in cardinalities)
        self.numeric_weight = nn.Parameter(torch.randn(numeric, dim) * 0.1)  # (n_numeric, dim)
        self.numeric_bias = nn.Parameter(torch.zeros(numeric, dim))
        self.columns = len(cardinalities) + numeric
        self.net = nn.Sequential(
            nn.Linear(self.columns * dim, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.GELU(),
        )

    def tokens(self, categorical: Tensor, numeric: Tensor) -> Tensor:
        """One token per column: (batch, columns, dim)."""
        parts = [emb(categorical[:, j]) for j, emb in enumerate(self.embeddings)]  # (batch, dim)
        cat = torch.stack(parts, dim=1) if parts else None  # (batch, n_categorical, dim)
        num = numeric[:, :, None] * self.numeric_weight + self.numeric_bias  # (batch, n_num, dim)
        return num if cat is None else torch.cat([cat, num], dim=1)

    def forward(self, categorical: Tensor, numeric: Tensor, present: Tensor) -> Tensor:
        flat = self.tokens(categorical, numeric).flatten(1)  # (batch, columns * dim)
        out: Tensor = self.net(flat) * present[:, None].to(flat.dtype)  # (batch, hidden)
        return out
