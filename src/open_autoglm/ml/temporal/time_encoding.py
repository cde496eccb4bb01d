"""Bochner functional time encoding (Xu et al. 2020): ``phi(dt) = cos(dt * w + b)``.

A translation-invariant kernel on time differences has a random-feature map of cosines; the
frequencies ``w`` are learned, initialised geometrically (1 down to 1e-9) so that gaps from
seconds to decades are resolved from the start.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["TimeEncoding"]


class TimeEncoding(nn.Module):
    """Map time gaps (...,) to (..., dim) features."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.w = nn.Linear(1, dim)
        with torch.no_grad():
            freqs = 1.0 / 10 ** np.linspace(0, 9, dim, dtype=np.float32)
            self.w.weight.copy_(torch.from_numpy(freqs).reshape(dim, 1))
            self.w.bias.zero_()

    def forward(self, dt: Tensor) -> Tensor:
        return torch.cos(self.w(dt.unsqueeze(-1).float()))  # (..., dim)
