"""Sentence embeddings from an encoder model, matching sentence-transformers' pipeline.

A sentence-transformers directory describes its pipeline in ``modules.json`` (Transformer ->
Pooling -> Normalize) and ``1_Pooling/config.json`` (which pooling). :class:`Embedder` reads
those when present so all-MiniLM-L6-v2 gives the same vectors as sentence-transformers,
without depending on that package. Batches are length bucketed: texts are sorted by token
count and split into forward passes by :func:`plan_buckets`, so short texts are not padded to
the longest one in the request.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from open_autoglm.errors import ValidationError
from open_autoglm.ml.text.loading import LoadedModel, ModelRole, load_model

__all__ = ["Embedder", "Pooling", "plan_buckets", "read_pooling_config"]


class Pooling(enum.StrEnum):
    MEAN = "mean"
    CLS = "cls"
    MAX = "max"


def read_pooling_config(path: Path) -> tuple[Pooling, bool]:
    """Pooling mode and whether to normalise, from a sentence-transformers directory.

    Defaults to mean pooling + normalise when the directory has no such config.
    """
    pooling, normalize = Pooling.MEAN, True
    modules_file = path / "modules.json"
    pooling_dir = path / "1_Pooling"
    if modules_file.exists():
        modules = json.loads(modules_file.read_text())
        types = [m.get("type", "") for m in modules]
        normalize = any(t.endswith("Normalize") for t in types)
        for module in modules:
            if module.get("type", "").endswith("Pooling"):
                pooling_dir = path / module.get("path", "1_Pooling")
    config_file = pooling_dir / "config.json"
    if config_file.exists():
        cfg = json.loads(config_file.read_text())
        if cfg.get("pooling_mode_cls_token"):
            pooling = Pooling.CLS
        elif cfg.get("pooling_mode_max_tokens"):
            pooling = Pooling.MAX
        elif cfg.get("pooling_mode_mean_tokens"):
            pooling = Pooling.MEAN
    return pooling, normalize


def _max_length(loaded: LoadedModel) -> int:
    st_config = loaded.path / "sentence_bert_config.json"
    if st_config.exists():
        value = json.loads(st_config.read_text()).get("max_seq_length")
        if isinstance(value, int):
            return value
    limits = [getattr(loaded.model.config, "max_position_embeddings", None)]
    limits.append(getattr(loaded.tokenizer, "model_max_length", None))
    return min(v for v in [*limits, 512] if isinstance(v, int) and v > 0)


def plan_buckets(
    lengths: Sequence[int], *, max_batch: int, overhead_tokens: float = 20.0
) -> list[list[int]]:
    """Split text indices into forward passes of similar length, cheapest first-to-last.

    A CPU encoder forward costs about ``overhead + batch * padded_length`` token-times (MiniLM
    on one thread: ~4 ms fixed, ~0.23 ms per token, so ``overhead_tokens`` ~ 20). Sorted by
    length, the best split into contiguous runs of at most ``max_batch`` is a small dynamic
    program: ``best[j] = min_i best[i] + overhead + (j - i) * sorted_len[j - 1]``. Mixed
    lengths end up in several short passes; equal lengths in one full batch.

    Returns lists of indices into ``lengths``, shortest texts first.
    """
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    n = len(order)
    best = [0.0] + [float("inf")] * n
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        longest = lengths[order[j - 1]]
        for i in range(max(0, j - max_batch), j):
            cost = best[i] + overhead_tokens + (j - i) * longest
            if cost < best[j]:
                best[j], cut[j] = cost, i
    chunks: list[list[int]] = []
    j = n
    while j > 0:
        chunks.append(order[cut[j] : j])
        j = cut[j]
    return chunks[::-1]


def pool(hidden: Any, mask: Any, mode: Pooling) -> Any:
    """Pool token states (batch, seq, dim) with mask (batch, seq) into (batch, dim)."""
    import torch

    if mode is Pooling.CLS:
        return hidden[:, 0]
    weights = mask.unsqueeze(-1).to(hidden.dtype)  # (batch, seq, 1)
    if mode is Pooling.MAX:
        return hidden.masked_fill(weights == 0, -1e9).max(dim=1).values
    return (hidden * weights).sum(dim=1) / torch.clamp(weights.sum(dim=1), min=1e-9)


class Embedder:
    """Embed texts into vectors (float32, L2-normalised by default)."""

    role = ModelRole.EMBEDDING

    def __init__(
        self,
        loaded: LoadedModel,
        *,
        pooling: Pooling | str | None = None,
        normalize: bool | None = None,
        batch_size: int = 32,
        max_length: int | None = None,
        overhead_tokens: float = 20.0,
    ) -> None:
        default_pooling, default_normalize = read_pooling_config(loaded.path)
        self.loaded = loaded
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.pooling = Pooling(pooling) if pooling else default_pooling
        self.normalize = default_normalize if normalize is None else normalize
        self.batch_size = batch_size
        self.overhead_tokens = overhead_tokens
        self.max_length = max_length or _max_length(loaded)

    @classmethod
    def from_path(
        cls, path: str | Path, *, dtype: str | None = None, linear: str = "auto", **kwargs: Any
    ) -> Embedder:
        """Load ``path`` and wrap it, with oneDNN Linears unless ``linear="torch"``."""
        return cls(load_model(path, ModelRole.EMBEDDING, dtype=dtype, linear=linear), **kwargs)

    @property
    def memory_bytes(self) -> int:
        return self.loaded.memory_bytes

    @property
    def dimension(self) -> int:
        return int(self.model.config.hidden_size)

    def _hidden_states(self, batch: Any) -> Any:
        """Token states (batch, seq, dim) for a padded batch; subclasses swap the runtime."""
        return self.model(**batch).last_hidden_state

    def embed(
        self,
        texts: Sequence[str],
        *,
        normalize: bool | None = None,
        pooling: Pooling | str | None = None,
        bucket: bool = True,
    ) -> Any:
        """Return a float32 tensor (len(texts), dim) in the order of ``texts``."""
        return self.embed_with_usage(texts, normalize=normalize, pooling=pooling, bucket=bucket)[0]

    def embed_with_usage(
        self,
        texts: Sequence[str],
        *,
        normalize: bool | None = None,
        pooling: Pooling | str | None = None,
        bucket: bool = True,
    ) -> tuple[Any, list[int]]:
        """Like :meth:`embed`, also returning each text's token count (for usage reports)."""
        import torch

        if isinstance(texts, str) or any(not isinstance(t, str) for t in texts):
            raise ValidationError("texts must be a list of strings")
        mode = Pooling(pooling) if pooling else self.pooling
        do_normalize = self.normalize if normalize is None else normalize
        if not texts:
            return torch.zeros((0, self.dimension)), []
        encoded = self.tokenizer(list(texts), truncation=True, max_length=self.max_length)
        lengths = [len(ids) for ids in encoded["input_ids"]]
        # Chunks of similar length keep padding small; results go back in input order.
        chunks = (
            plan_buckets(lengths, max_batch=self.batch_size, overhead_tokens=self.overhead_tokens)
            if bucket
            else [
                list(range(start, min(start + self.batch_size, len(texts))))
                for start in range(0, len(texts), self.batch_size)
            ]
        )
        out = torch.empty((len(texts), self.dimension), dtype=torch.float32)
        keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in encoded]
        with torch.inference_mode():
            for chunk in chunks:
                batch = self.tokenizer.pad(
                    {k: [encoded[k][i] for i in chunk] for k in keys}, return_tensors="pt"
                )
                hidden = self._hidden_states(batch)  # (chunk, seq, dim)
                vectors = pool(hidden, batch["attention_mask"], mode).float()
                if do_normalize:
                    vectors = torch.nn.functional.normalize(vectors, p=2, dim=1)
                out[torch.tensor(chunk)] = vectors
        return out, lengths
