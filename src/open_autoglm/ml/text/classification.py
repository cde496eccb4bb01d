"""Text classification: softmax scores over ``config.id2label``, top-k labels per text."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from open_autoglm.errors import ValidationError
from open_autoglm.ml.text.loading import LoadedModel, ModelRole, load_model

__all__ = ["Classifier"]


class Classifier:
    """A sequence classifier returning ``[{"label", "score"}, ...]`` per text, best first."""

    role = ModelRole.TEXT_CLASSIFICATION

    def __init__(self, loaded: LoadedModel, *, batch_size: int = 32) -> None:
        self.loaded = loaded
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.batch_size = batch_size
        id2label = getattr(self.model.config, "id2label", None) or {}
        n = int(self.model.config.num_labels)
        self.labels = [str(id2label.get(i, id2label.get(str(i), f"LABEL_{i}"))) for i in range(n)]

    @classmethod
    def from_path(
        cls, path: str | Path, *, dtype: str | None = None, linear: str = "auto", **kwargs: Any
    ) -> Classifier:
        """Load ``path`` and wrap it, with oneDNN Linears unless ``linear="torch"``."""
        loaded = load_model(path, ModelRole.TEXT_CLASSIFICATION, dtype=dtype, linear=linear)
        return cls(loaded, **kwargs)

    @property
    def memory_bytes(self) -> int:
        return self.loaded.memory_bytes

    def probabilities(self, texts: Sequence[str]) -> Any:
        """Softmax probabilities, a float32 tensor (len(texts), num_labels)."""
        import torch

        if isinstance(texts, str) or any(not isinstance(t, str) for t in texts):
            raise ValidationError("texts must be a list of strings")
        out = []
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                batch = self.tokenizer(
                    list(texts[start : start + self.batch_size]),
                    padding=True,
                    truncation=True,
                    return_tensors="pt",
                )
                logits = self.model(**batch).logits  # (batch, num_labels)
                out.append(torch.softmax(logits.float(), dim=-1))
        return torch.cat(out) if out else torch.zeros((0, len(self.labels)))

    def classify(
        self, texts: Sequence[str], *, top_k: int | None = 1
    ) -> list[list[dict[str, Any]]]:
        """Top ``top_k`` labels (all when None) with scores per text, highest score first."""
        if top_k is not None and top_k < 1:
            raise ValidationError("top_k must be >= 1")
        k = len(self.labels) if top_k is None else min(top_k, len(self.labels))
        probs = self.probabilities(texts)
        results = []
        for row in probs:
            scores, idx = row.topk(k)
            results.append(
                [
                    {"label": self.labels[int(i)], "score": float(s)}
                    for s, i in zip(scores, idx, strict=True)
                ]
            )
        return results
