"""What every fusion model consumes: a batch of rows with both modalities and their masks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["FusionBatch", "FusionConfig"]


@dataclass(frozen=True)
class FusionConfig:
    """Sizes of a fusion model; stored as JSON beside its weights.

    Args:
        text_dim: width of the frozen text embeddings (384 for MiniLM); 0 without text.
        cardinalities: embedding table size per categorical column (unknown included).
        numeric: number of numeric columns.
        classes: number of label classes.
        hidden: width of each modality encoder's output and of the heads.
        shared: the shared width the alignment step projects both modalities to.
        category_dim: width of one categorical embedding (and of one tabular feature token).
        text_tokens: tokens the text vector is expanded into for cross-modal attention.
        heads: attention heads in the cross-modal block.
        dropout: dropout in every MLP.
    """

    text_dim: int
    cardinalities: tuple[int, ...]
    numeric: int
    classes: int
    hidden: int = 128
    shared: int = 64
    category_dim: int = 16
    text_tokens: int = 4
    heads: int = 4
    dropout: float = 0.2

    @property
    def has_text(self) -> bool:
        return self.text_dim > 0

    @property
    def has_tabular(self) -> bool:
        return bool(self.cardinalities) or self.numeric > 0

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "cardinalities": list(self.cardinalities)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FusionConfig:
        return cls(**{**data, "cardinalities": tuple(data["cardinalities"])})


@dataclass(frozen=True)
class FusionBatch:
    """Rows of a table as tensors; a modality a row lacks is zero there and masked."""

    text: Any  # (batch, text_dim) float32 frozen sentence embeddings, zero where absent
    text_present: Any  # (batch,) bool
    categorical: Any  # (batch, n_categorical) long, 0 = unknown / missing
    numeric: Any  # (batch, n_numeric) float32, standardised
    tab_present: Any  # (batch,) bool

    def __len__(self) -> int:
        return int(self.text_present.shape[0])

    def select(self, index: Any) -> FusionBatch:
        """The rows ``index`` (a long tensor or slice)."""
        return FusionBatch(
            self.text[index],
            self.text_present[index],
            self.categorical[index],
            self.numeric[index],
            self.tab_present[index],
        )
