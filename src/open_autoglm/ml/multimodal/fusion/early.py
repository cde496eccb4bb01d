"""Early fusion: the raw features of both modalities concatenated into one model.

No per-modality encoder: the frozen text embedding, the categorical embeddings, the numerics
and the two presence flags are one feature vector for one MLP.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from open_autoglm.ml.multimodal.batch import FusionBatch, FusionConfig
from open_autoglm.ml.multimodal.fusion import register
from open_autoglm.ml.multimodal.fusion.base import Encoded, FusionModel, mlp_head

__all__ = ["EarlyFusion"]


@register("early")
class EarlyFusion(FusionModel):
    def __init__(self, config: FusionConfig) -> None:
        super().__init__(config)
        c = config
        self.embeddings = nn.ModuleList(nn.Embedding(n, c.category_dim) for n in c.cardinalities)
        width = c.text_dim + len(c.cardinalities) * c.category_dim + c.numeric + 2
        self.norm = nn.LayerNorm(width)
        self.head = nn.Sequential(
            nn.Linear(width, c.hidden),
            nn.GELU(),
            nn.Dropout(c.dropout),
            mlp_head(c.hidden, c.hidden, c.classes, c.dropout),
        )

    def encode(self, batch: FusionBatch) -> Encoded:
        cats = [emb(batch.categorical[:, j]) for j, emb in enumerate(self.embeddings)]
        return {
            "text": batch.text * batch.text_present[:, None].float(),  # (batch, text_dim)
            "tabular": torch.cat([*cats, batch.numeric], dim=1),  # (batch, C * dim + n_num)
        }

    def fuse(self, encoded: Encoded, batch: FusionBatch) -> Tensor:
        flags = torch.stack([batch.text_present, batch.tab_present], dim=1).float()  # (batch, 2)
        fused: Tensor = self.norm(torch.cat([encoded["text"], encoded["tabular"], flags], dim=1))
        return fused  # (batch, width)
