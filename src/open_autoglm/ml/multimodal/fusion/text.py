"""Text only: the frozen sentence embedding through the text encoder and a head."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from open_autoglm.ml.multimodal.batch import FusionBatch, FusionConfig
from open_autoglm.ml.multimodal.fusion import register
from open_autoglm.ml.multimodal.fusion.base import Encoded, FusionModel, mlp_head

__all__ = ["TextOnly"]


@register("text")
class TextOnly(FusionModel):
    needs: ClassVar[frozenset[str]] = frozenset({"text"})

    def __init__(self, config: FusionConfig) -> None:
        super().__init__(config)
        self.text = self.text_encoder()
        self.head = mlp_head(config.hidden, config.hidden, config.classes, config.dropout)

    def encode(self, batch: FusionBatch) -> Encoded:
        return {"text": self.text(batch.text, batch.text_present)}  # (batch, hidden)

    def fuse(self, encoded: Encoded, batch: FusionBatch) -> Tensor:
        return encoded["text"]
