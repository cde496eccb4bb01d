"""The trainable text encoder: an MLP over frozen sentence embeddings.

The sentence model itself stays frozen (its vectors are computed once and cached,
:mod:`.text_embedding`); what trains is this small projection, so an epoch costs a few
matrix products per row rather than a transformer forward.
"""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["TextEncoder"]


class TextEncoder(nn.Module):
    """(batch, text_dim) frozen embeddings -> (batch, hidden) features."""

    def __init__(self, text_dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(text_dim),
            nn.Dropout(dropout),
            nn.Linear(text_dim, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.GELU(),
        )

    def forward(self, text: Tensor, present: Tensor) -> Tensor:
        # A row without text gives zeros, not the encoding of a zero vector.
        out: Tensor = self.net(text) * present[:, None].to(text.dtype)  # (batch, hidden)
        return out
