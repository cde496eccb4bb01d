"""Link decoder: an MLP from a pair's embeddings (and pair features) to a logit.

Pair features are neighbour co-occurrence counts (DyGFormer's idea in its simplest form):
how often ``dst`` is among ``src``'s recent neighbours and vice versa. They are inductive,
since no node's own id is looked up, and let a model see repeated interactions directly.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor, nn

__all__ = ["PAIR_FEATURES", "LinkDecoder", "cooccurrence"]

PAIR_FEATURES = 4
_PAIR_DIM = 16


def cooccurrence(
    src: npt.NDArray[np.int64],
    dst: npt.NDArray[np.int64],
    nbr_src: npt.NDArray[np.int64],
    mask_src: npt.NDArray[np.bool_],
    nbr_dst: npt.NDArray[np.int64],
    mask_dst: npt.NDArray[np.bool_],
) -> Tensor:
    """(B, 4): log-counts of dst among src's neighbours (B, k) and src among dst's, and the
    shares of each neighbourhood they make up."""
    c_sd = ((nbr_src == dst[:, None]) & mask_src).sum(1)
    c_ds = ((nbr_dst == src[:, None]) & mask_dst).sum(1)
    n_s, n_d = np.maximum(mask_src.sum(1), 1), np.maximum(mask_dst.sum(1), 1)
    feats = np.stack([np.log1p(c_sd), np.log1p(c_ds), c_sd / n_s, c_ds / n_d], axis=1)
    return torch.from_numpy(feats.astype(np.float32))


class LinkDecoder(nn.Module):
    """``MLP([h_src | h_dst | pair_mlp(pair)])`` -> logit; ``pair=False`` drops the pair term."""

    def __init__(self, dim: int, pair: bool = False) -> None:
        super().__init__()
        self.pair = (
            nn.Sequential(
                nn.Linear(PAIR_FEATURES, _PAIR_DIM), nn.ReLU(), nn.Linear(_PAIR_DIM, _PAIR_DIM)
            )
            if pair
            else None
        )
        extra = _PAIR_DIM if pair else 0
        self.mlp = nn.Sequential(nn.Linear(2 * dim + extra, dim), nn.ReLU(), nn.Linear(dim, 1))

    def forward(self, h_src: Tensor, h_dst: Tensor, pair: Tensor | None = None) -> Tensor:
        parts = [h_src, h_dst]
        if self.pair is not None and pair is not None:
            parts.append(self.pair(pair))
        logits: Tensor = self.mlp(torch.cat(parts, dim=-1))  # (B, 1)
        return logits.squeeze(-1)
