"""Sentence embeddings from an encoder model, matching sentence-transformers' pipeline.

A sentence-transformers directory describes its pipeline in ``modules.json`` (Transformer ->
Pooling -> Normalize) and ``1_Pooling/config.json`` (which pooling). :class:`Embedder` reads
those when present so all-MiniLM-L6-v2 gives the same vectors as sentence-transformers,
without depending on that package.

Texts are sorted by token count and grouped so short texts are not padded to the longest one
in the request. BERT-family encoders (MiniLM among them) run *packed* (:func:`plan_packs`,
:func:`packed_hidden`): the texts of a pack, up to ``pack_tokens`` tokens in all, go
through every Linear as one run of rows with no padding at all, and only attention, a small
share of the work, sees them padded per text. A padded forward pays a fixed cost per pass (streaming the
encoder's weights) and pads each pass to its longest text, so padded bucketing has to trade
passes against padding (:func:`plan_buckets`); packing pays neither. On MiniLM with one
thread it took a text from 4.8 to 3.9 ms in calls of 8 texts and from 4.0 to 3.6 ms in
calls of 32, with cosine >= 0.9999998 to the padded forward. Packs are capped at
``pack_tokens`` (256) tokens: bigger ones spill the activations out of the core's cache and
ran slower again. Other architectures keep :func:`plan_buckets`.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from open_autoglm.errors import ValidationError
from open_autoglm.ml.text.loading import LoadedModel, ModelRole, load_model

__all__ = [
    "PACKED_INPUTS",
    "Embedder",
    "Pooling",
    "pack_inputs",
    "packable",
    "packed_hidden",
    "plan_buckets",
    "plan_packs",
    "pool_packed",
    "read_pooling_config",
]


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


def packable(model: Any) -> bool:
    """Whether ``model`` is a BERT encoder :func:`packed_hidden` can run (absolute positions
    counted from 0 per text, bidirectional attention)."""
    config = getattr(model, "config", None)
    return (
        getattr(config, "model_type", None) == "bert"
        and getattr(config, "position_embedding_type", "absolute") == "absolute"
        and not getattr(config, "is_decoder", False)
        and hasattr(model, "embeddings")
        and hasattr(model, "encoder")
    )


def plan_packs(lengths: Sequence[int], *, max_tokens: int, max_texts: int) -> list[list[int]]:
    """Split text indices into packs of at most ``max_tokens`` tokens and ``max_texts`` texts.

    Texts are taken shortest first, so each pack's texts have similar lengths and attention,
    which is padded per pack, pads little. A text longer than ``max_tokens`` is a pack alone.
    """
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    packs: list[list[int]] = []
    current: list[int] = []
    tokens = 0
    for i in order:
        if current and (tokens + lengths[i] > max_tokens or len(current) >= max_texts):
            packs.append(current)
            current, tokens = [], 0
        current.append(i)
        tokens += lengths[i]
    if current:
        packs.append(current)
    return packs


def pack_inputs(encoded: Any, chunk: Sequence[int]) -> dict[str, Any]:
    """The packed forward's inputs for texts ``chunk`` of a tokenizer's unpadded output.

    ``input_ids``, ``token_type_ids`` and ``position_ids`` are 1-D over the pack's T tokens,
    text after text. ``gather`` (B*L) lays them out padded, text by text, to the longest
    text's L (index T points at a zero row); ``scatter`` (T) picks the real tokens back out
    of that layout; ``mask`` (B, 1, 1, L) is attention's additive key mask.
    """
    import torch

    ids = [encoded["input_ids"][i] for i in chunk]
    lengths = torch.tensor([len(x) for x in ids])
    total, longest = int(lengths.sum()), int(lengths.max())
    starts = torch.cumsum(lengths, 0) - lengths
    slot = torch.arange(longest)
    real = slot[None, :] < lengths[:, None]  # (B, L)
    types = encoded.get("token_type_ids")
    return {
        "input_ids": torch.tensor([t for x in ids for t in x]),
        "token_type_ids": (
            torch.tensor([t for i in chunk for t in types[i]])
            if types is not None
            else torch.zeros(total, dtype=torch.long)
        ),
        "position_ids": slot.expand(len(ids), longest)[real],
        "gather": torch.where(real, starts[:, None] + slot, total).reshape(-1),
        "scatter": real.reshape(-1).nonzero().squeeze(1),
        "mask": torch.zeros(len(ids), 1, 1, longest).masked_fill(
            ~real[:, None, None, :], float("-inf")
        ),
        "lengths": lengths,
    }


PACKED_INPUTS = ("input_ids", "token_type_ids", "position_ids", "gather", "scatter", "mask")
"""The tensors :func:`packed_hidden` reads (``lengths`` is only for pooling)."""


def packed_hidden(
    model: Any, inputs: dict[str, Any], *, qkv: Sequence[Callable[[Any], Any]] | None = None
) -> Any:
    """Token states (T, dim) of a BERT encoder for a pack from :func:`pack_inputs`.

    The model's own modules run on the unpadded rows (embeddings, Q/K/V, attention output,
    FFN, LayerNorms); only scaled-dot-product attention runs on the per-text padded layout.
    ``qkv``, one per layer, replaces the three Q/K/V projections with one that returns them
    side by side (T, 3 * dim): the ONNX export fuses them so int8 quantises the input once.
    """
    import torch
    import torch.nn.functional as F

    hidden = model.embeddings(
        input_ids=inputs["input_ids"][None],
        token_type_ids=inputs["token_type_ids"][None],
        position_ids=inputs["position_ids"][None],
    )[0]
    gather, scatter = inputs["gather"], inputs["scatter"]
    mask = inputs["mask"].to(hidden.dtype)
    texts, longest = mask.shape[0], mask.shape[-1]
    for i, layer in enumerate(model.encoder.layer):
        attn = layer.attention.self
        heads, size = attn.num_attention_heads, attn.attention_head_size
        if qkv is None:
            rows = torch.cat([attn.query(hidden), attn.key(hidden), attn.value(hidden)], dim=1)
        else:
            rows = qkv[i](hidden)
        rows = torch.cat([rows, rows.new_zeros(1, rows.shape[1])]).index_select(0, gather)
        q, k, v = rows.view(texts, longest, 3, heads, size).permute(2, 0, 3, 1, 4)
        context = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=attn.scaling)
        context = context.transpose(1, 2).reshape(texts * longest, heads * size)
        attended = layer.attention.output(context.index_select(0, scatter), hidden)
        hidden = layer.output(layer.intermediate(attended), attended)
    return hidden


def pool_packed(hidden: Any, inputs: dict[str, Any], mode: Pooling) -> Any:
    """Pool packed token states (T, dim) into one vector per text (B, dim)."""
    import torch

    lengths = inputs["lengths"]
    if mode is Pooling.CLS:
        return hidden.index_select(0, torch.cumsum(lengths, 0) - lengths)
    if mode is Pooling.MAX:
        floor = hidden.new_full((1, hidden.shape[1]), float("-inf"))
        padded = torch.cat([hidden, floor]).index_select(0, inputs["gather"])
        return padded.view(len(lengths), -1, hidden.shape[1]).amax(dim=1)
    segment = torch.repeat_interleave(torch.arange(len(lengths)), lengths)
    sums = hidden.new_zeros(len(lengths), hidden.shape[1]).index_add_(0, segment, hidden)
    return sums / lengths[:, None].to(hidden.dtype)


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
        pack: bool = True,
        pack_tokens: int = 256,
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
        # Packed forward for BERT encoders (module docstring); ``pack=False`` keeps padding.
        self.packed = pack and packable(loaded.model)
        self.pack_tokens = pack_tokens

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

    def _packed_hidden_states(self, inputs: dict[str, Any]) -> Any:
        """Token states (T, dim) for a pack (:func:`pack_inputs`); subclasses swap the runtime."""
        return packed_hidden(self.model, inputs)

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
        packed = bucket and self.packed
        # Texts of similar length go together; results go back in input order.
        if packed:
            chunks = plan_packs(lengths, max_tokens=self.pack_tokens, max_texts=self.batch_size)
        elif bucket:
            chunks = plan_buckets(
                lengths, max_batch=self.batch_size, overhead_tokens=self.overhead_tokens
            )
        else:
            step = self.batch_size
            chunks = [list(range(i, min(i + step, len(texts)))) for i in range(0, len(texts), step)]
        out = torch.empty((len(texts), self.dimension), dtype=torch.float32)
        with torch.inference_mode():
            for chunk in chunks:
                vectors = self._pooled(encoded, chunk, mode, packed=packed).float()
                if do_normalize:
                    vectors = torch.nn.functional.normalize(vectors, p=2, dim=1)
                out[torch.tensor(chunk)] = vectors
        return out, lengths

    def _pooled(self, encoded: Any, chunk: list[int], mode: Pooling, *, packed: bool) -> Any:
        """Pooled vectors (len(chunk), dim) for texts ``chunk`` of the tokenizer's output."""
        if packed:
            inputs = pack_inputs(encoded, chunk)
            return pool_packed(self._packed_hidden_states(inputs), inputs, mode)
        keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in encoded]
        batch = self.tokenizer.pad(
            {k: [encoded[k][i] for i in chunk] for k in keys}, return_tensors="pt"
        )
        return pool(self._hidden_states(batch), batch["attention_mask"], mode)
