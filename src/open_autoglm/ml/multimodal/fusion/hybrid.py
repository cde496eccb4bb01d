"""Hybrid fusion: per-modality encoders fused inside the network.

Text and tabular encoders, then the alignment step (projection to a shared width and
cross-modal attention, :mod:`..alignment`), then a gate that mixes the two aligned vectors
per row, and an MLP over the concatenation of the aligned vectors, their gated mix and the
presence flags.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from open_autoglm.ml.multimodal.alignment import Alignment
from open_autoglm.ml.multimodal.batch import FusionBatch, FusionConfig
from open_autoglm.ml.multimodal.fusion import register
from open_autoglm.ml.multimodal.fusion.base import Encoded, FusionModel, mlp_head

__all__ = ["HybridFusion"]


@register("hybrid")
class HybridFusion(FusionModel):
    def __init__(self, config: FusionConfig) -> None:
        super().__init__(config)
        c = config
        self.text = self.text_encoder()
        self.tabular = self.tabular_encoder()
        self.align = Alignment(
            c.hidden,
            c.category_dim,
            c.shared,
            text_tokens=c.text_tokens,
            heads=c.heads,
            dropout=c.dropout,
        )
        self.gate = nn.Linear(2 * c.shared, c.shared)
        # aligned text, aligned tabular, gated mix, both encoders' outputs, presence flags
        self.head = mlp_head(3 * c.shared + 2 * c.hidden + 2, c.hidden, c.classes, c.dropout)

    def encode(self, batch: FusionBatch) -> Encoded:
        t = self.text(batch.text, batch.text_present)  # (batch, hidden)
        a = self.tabular(batch.categorical, batch.numeric, batch.tab_present)  # (batch, hidden)
        tokens = self.tabular.tokens(batch.categorical, batch.numeric)  # (batch, cols, dim)
        t_aligned, a_aligned = self.align(t, batch.text_present, tokens, batch.tab_present)
        return {"text": t, "tabular": a, "text_aligned": t_aligned, "tabular_aligned": a_aligned}

    def fuse(self, encoded: Encoded, batch: FusionBatch) -> Tensor:
        tp = batch.text_present[:, None].float()  # (batch, 1)
        ap = batch.tab_present[:, None].float()
        t, a = encoded["text_aligned"] * tp, encoded["tabular_aligned"] * ap  # (batch, shared)
        g = torch.sigmoid(self.gate(torch.cat([t, a], dim=1)))  # (batch, shared)
        mixed = g * t + (1 - g) * a
        return torch.cat([t, a, mixed, encoded["text"], encoded["tabular"], tp, ap], dim=1)
