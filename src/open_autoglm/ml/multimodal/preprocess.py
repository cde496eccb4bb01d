"""Preprocessing state fitted on training rows: category vocabularies, numeric scalers, classes.

The state is plain JSON (:meth:`Preprocessor.to_dict`), stored next to the weights, so a
prediction encodes new rows exactly as training did without unpickling anything. Categories
unseen in training (or rarer than ``min_count``) and missing ones share index 0, "unknown".
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

from open_autoglm.spec.table import NumericPolicy, TableData, TableSchema, label_key

__all__ = ["EncodedTable", "Preprocessor"]

_CLIP = 5.0  # standardised numbers beyond +-5 sd are clipped: one outlier must not dominate
_FORMAT = "open-autoglm/fusion-preprocess/1"


@dataclass(frozen=True)
class EncodedTable:
    """A table as tensors (torch), rows aligned; the text column is embedded separately."""

    categorical: Any  # (rows, n_categorical) long, 0 = unknown
    numeric: Any  # (rows, n_numeric) float32, standardised, imputed
    tab_present: Any  # (rows,) bool: the row has at least one tabular value
    labels: Any | None  # (rows,) long class indices, or None


@dataclass(frozen=True)
class Preprocessor:
    """Vocabularies, scalers and the label's classes, fitted once on the training rows."""

    schema: TableSchema
    vocabularies: dict[str, list[str]]  # column -> categories; index i + 1 in the model
    scalers: dict[str, dict[str, float]]  # column -> {"mean", "std", "fill"}
    classes: list[Any]

    @classmethod
    def fit(
        cls, table: TableData, *, min_count: int = 1, classes: list[Any] | None = None
    ) -> Preprocessor:
        """Fit on ``table`` (the training rows); ``classes`` defaults to its labels' values."""
        vocabularies: dict[str, list[str]] = {}
        for name, cells in table.categorical.items():
            counts: dict[str, int] = {}
            for v in cells:
                if v is not None:
                    counts[v] = counts.get(v, 0) + 1
            vocabularies[name] = sorted(k for k, c in counts.items() if c >= min_count)
        scalers: dict[str, dict[str, float]] = {}
        policy = table.schema.missing.numeric
        for name, values in table.numeric.items():
            seen = [v for v in values if v is not None] or [0.0]
            mean = statistics.fmean(seen)
            std = statistics.pstdev(seen) or 1.0
            fill = {
                NumericPolicy.MEDIAN: statistics.median(seen),
                NumericPolicy.ZERO: 0.0,
            }.get(policy, mean)
            scalers[name] = {"mean": mean, "std": std, "fill": fill}
        return cls(table.schema, vocabularies, scalers, classes or table.classes())

    @property
    def cardinalities(self) -> list[int]:
        """Embedding table sizes per categorical column (unknown included)."""
        return [len(self.vocabularies[n]) + 1 for n in self.schema.categorical]

    def transform(self, table: TableData) -> EncodedTable:
        """Encode rows; labels (if the table has them) become class indices."""
        import torch

        rows = table.num_rows
        cat = torch.zeros((rows, len(self.schema.categorical)), dtype=torch.long)
        present = torch.zeros(rows, dtype=torch.bool)
        for j, name in enumerate(self.schema.categorical):
            index = {v: i + 1 for i, v in enumerate(self.vocabularies[name])}
            cells = table.categorical[name]
            cat[:, j] = torch.tensor([index.get(v, 0) if v is not None else 0 for v in cells])
            present |= torch.tensor([v is not None for v in cells], dtype=torch.bool)
        num = torch.zeros((rows, len(self.schema.numeric)), dtype=torch.float32)
        for j, name in enumerate(self.schema.numeric):
            s = self.scalers[name]
            values = table.numeric[name]
            raw = torch.tensor([s["fill"] if v is None else v for v in values], dtype=torch.float64)
            num[:, j] = ((raw - s["mean"]) / s["std"]).clamp(-_CLIP, _CLIP).float()
            present |= torch.tensor([v is not None for v in values], dtype=torch.bool)
        labels = None
        if table.labels is not None:
            by_key = {label_key(c): i for i, c in enumerate(self.classes)}
            labels = torch.tensor([by_key[label_key(v)] for v in table.labels], dtype=torch.long)
        return EncodedTable(cat, num, present, labels)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": _FORMAT,
            "schema": self.schema.model_dump(mode="json"),
            "vocabularies": self.vocabularies,
            "scalers": self.scalers,
            "classes": self.classes,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocessor:
        if data.get("format") != _FORMAT:
            raise ValueError(f"not a fusion preprocessing state: {data.get('format')!r}")
        return cls(
            TableSchema.model_validate(data["schema"]),
            {k: list(v) for k, v in data["vocabularies"].items()},
            {k: dict(v) for k, v in data["scalers"].items()},
            list(data["classes"]),
        )
