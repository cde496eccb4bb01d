"""Tabular only: categorical embeddings and numerics through the tabular encoder and a head."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from open_autoglm.ml.multimodal.batch import FusionBatch, FusionConfig
from open_autoglm.ml.multimodal.fusion import register
from open_autoglm.ml.multimodal.fusion.base import Encoded, FusionModel, mlp_head

__all__ = ["TabularOnly"]


@register("tabular")
class TabularOnly(FusionModel):
    needs: ClassVar[frozenset[str]] = frozenset({"tabular"})

    def __init__(self, config: FusionConfig) -> None:
        super().__init__(config)
        self.tabular = self.tabular_encoder()
        self.head = mlp_head(config.hidden, config.hidden, config.classes, config.dropout)

    def encode(self, batch: FusionBatch) -> Encoded:
        return {"tabular": self.tabular(batch.categorical, batch.numeric, batch.tab_present)}

    def fuse(self, encoded: Encoded, batch: FusionBatch) -> Tensor:
        return encoded["tabular"]  # (batch, hidden)
