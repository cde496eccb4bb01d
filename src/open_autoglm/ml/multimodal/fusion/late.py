"""Late fusion: one model per modality, their predictions combined.

Each modality has its own encoder and head, trained on its own loss; the fused prediction is
a learned weighted average of their log-probabilities over the modalities a row has (a row
with neither gets uniform probabilities). Nothing but the two weights sees both modalities.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from open_autoglm.ml.multimodal.batch import FusionBatch, FusionConfig
from open_autoglm.ml.multimodal.fusion import register
from open_autoglm.ml.multimodal.fusion.base import Encoded, FusionModel, mlp_head

__all__ = ["LateFusion"]


@register("late")
class LateFusion(FusionModel):
    def __init__(self, config: FusionConfig) -> None:
        super().__init__(config)
        c = config
        self.text = self.text_encoder()
        self.tabular = self.tabular_encoder()
        self.text_head = mlp_head(c.hidden, c.hidden, c.classes, c.dropout)
        self.tabular_head = mlp_head(c.hidden, c.hidden, c.classes, c.dropout)
        self.mix = nn.Parameter(torch.zeros(2))  # softmax -> weight of text, tabular

    def encode(self, batch: FusionBatch) -> Encoded:
        t = self.text(batch.text, batch.text_present)
        a = self.tabular(batch.categorical, batch.numeric, batch.tab_present)
        return {
            "text": F.log_softmax(self.text_head(t), dim=-1),  # (batch, classes)
            "tabular": F.log_softmax(self.tabular_head(a), dim=-1),  # (batch, classes)
        }

    def fuse(self, encoded: Encoded, batch: FusionBatch) -> Tensor:
        present = torch.stack([batch.text_present, batch.tab_present], dim=1)  # (batch, 2)
        weights = torch.softmax(self.mix, dim=0)[None, :] * present.float()  # (batch, 2)
        total = weights.sum(dim=1, keepdim=True)
        weights = torch.where(total > 0, weights / total.clamp(min=1e-9), 0.0)
        return weights[:, :1] * encoded["text"] + weights[:, 1:] * encoded["tabular"]

    def classify(self, fused: Tensor) -> Tensor:
        return fused  # already log-probabilities: softmax of them is the mixture's normalisation

    def sample_losses(self, batch: FusionBatch, labels: Tensor) -> Tensor:
        encoded = self.encode(batch)
        fused = self.fuse(encoded, batch)
        each = [
            F.nll_loss(encoded[m].float(), labels, reduction="none") * mask.float()
            for m, mask in (("text", batch.text_present), ("tabular", batch.tab_present))
        ]  # (batch,) each
        total: Tensor = F.cross_entropy(fused.float(), labels, reduction="none") + each[0] + each[1]
        return total
