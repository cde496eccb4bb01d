"""Sentence embeddings from an encoder model, matching sentence-transformers' pipeline.

A sentence-transformers directory describes its pipeline in ``modules.json`` (Transformer ->
Pooling -> Normalize) and ``1_Pooling/config.json`` (which pooling). :class:`Embedder` reads
those when present so all-MiniLM-L6-v2 gives the same vectors as sentence-transformers,
without depending on that package.

A padded forward pays a fixed cost per pass (streaming the encoder's weights) and pads each
pass to its longest text, so it has to trade passes against padding. BERT-family encoders
therefore run *packed* (:func:`plan_packs`, :func:`packed_hidden`): the texts of a pack, up
to ``pack_tokens`` tokens in all, go through every Linear as one run of rows with no
padding, and only attention sees them padded, per group of similar lengths
(:func:`plan_attention`), since attention's cost grows with the square of the padded
length. A call goes in as few packs of about equal size as the cap allows; the cap is
measured at load (:meth:`Embedder.tune`), since where a pack's activations spill out of the
core's cache depends on the machine. Other architectures keep padded passes planned by cost
(:func:`plan_buckets`).
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from open_autoglm.errors import ValidationError
from open_autoglm.ml.text.loading import LoadedModel, ModelRole, load_model
from open_autoglm.ml.text.tuning_cache import TuningCache, TuningSource

__all__ = [
    "PACKED_INPUTS",
    "Embedder",
    "Pooling",
    "pack_inputs",
    "packable",
    "packed_hidden",
    "plan_attention",
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
    which is padded per pack, pads little. As few packs as the caps allow, of about equal
    size: each pack pays a fixed cost (it streams every weight of the encoder), so a call of
    270 tokens under a cap of 256 runs as two packs of ~135, not 256 and a 14-token pack
    that costs nearly as much as a full one. A text longer than ``max_tokens`` is a pack
    alone.
    """
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    if not order:
        return []
    total = sum(lengths)
    count = max(-(-total // max_tokens), -(-len(order) // max_texts))
    while True:  # texts do not split: a cap can force one pack more than the shares planned
        packs = _cut_packs(order, lengths, total / count, max_tokens, max_texts)
        if len(packs) <= count:
            return packs
        count += 1


def _cut_packs(
    order: list[int], lengths: Sequence[int], target: float, max_tokens: int, max_texts: int
) -> list[list[int]]:
    """``order`` cut in runs of about ``target`` tokens each, within the caps."""
    packs: list[list[int]] = []
    current: list[int] = []
    tokens = done = 0
    for i in order:
        n = lengths[i]
        # Next pack once this text's middle would fall past this pack's share of the total,
        # or the caps would be exceeded.
        if current and (
            tokens + n > max_tokens
            or len(current) >= max_texts
            or done + tokens + n / 2 > target * (len(packs) + 1)
        ):
            packs.append(current)
            done += tokens
            current, tokens = [], 0
        current.append(i)
        tokens += n
    packs.append(current)
    return packs


# Attention's cost model for :func:`plan_attention`, in units of one (query, key) pair of one
# text: a group of n texts padded to L costs n * L * (L + _ATTENTION_ROW), plus
# _ATTENTION_GROUP for each group (its own kernel call, slice and mask). Fitted on MiniLM's
# scaled-dot-product attention with one thread: ~0.028 us per n * L^2 and ~0.06 us per
# n * L. The group cost was chosen end to end: on calls of 9 and 16 random texts, 500 served
# best (every text alone, or 1700-2000, were 1-3% slower).
_ATTENTION_ROW = 2.0
_ATTENTION_GROUP = 500.0


def plan_attention(
    lengths: Sequence[int], *, group_cost: float = _ATTENTION_GROUP
) -> list[list[int]]:
    """Texts of a pack cut into attention groups, each padded only to its own longest text.

    The Linears see the pack unpadded; attention needs a padded (texts, longest) layout, and
    its cost grows with the square of the longest text, so one short and one long text
    padded together cost two long ones. Sorted by length, the cheapest cut into contiguous
    groups is a small dynamic program (as in :func:`plan_buckets`):
    ``best[j] = min_i best[i] + group_cost + (j - i) * L * (L + row)`` with ``L`` the
    length of text ``j - 1``. Returns lists of indices into ``lengths``, shortest first.
    """
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    n = len(order)
    best = [0.0] + [float("inf")] * n
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        longest = lengths[order[j - 1]]
        per_text = longest * (longest + _ATTENTION_ROW)
        for i in range(j):
            cost = best[i] + group_cost + (j - i) * per_text
            if cost < best[j]:
                best[j], cut[j] = cost, i
    groups: list[list[int]] = []
    j = n
    while j > 0:
        groups.append(order[cut[j] : j])
        j = cut[j]
    return groups[::-1]


def pack_inputs(
    encoded: Any, chunk: Sequence[int], *, split_attention: bool = False
) -> dict[str, Any]:
    """The packed forward's inputs for texts ``chunk`` of a tokenizer's unpadded output.

    ``input_ids``, ``token_type_ids`` and ``position_ids`` are 1-D over the pack's T tokens,
    text after text. ``gather`` lays them out padded for attention (index T points at a zero
    row); ``scatter`` (T) picks the real tokens back out of that layout; ``mask`` is
    attention's additive key mask, (B, 1, 1, L) with every text padded to the longest one's
    L. With ``split_attention`` the texts are laid out in the groups of
    :func:`plan_attention`, one after the other, each padded to its own longest text, and
    ``mask`` is a tuple of one such mask per group (an ONNX graph takes the single layout).
    ``lengths`` (B) is each text's token count, for pooling.
    """
    import torch

    ids = [encoded["input_ids"][i] for i in chunk]
    sizes = [len(x) for x in ids]
    lengths = torch.tensor(sizes)
    total = int(lengths.sum())
    starts = torch.cumsum(lengths, 0) - lengths
    groups = plan_attention(sizes) if split_attention else [list(range(len(ids)))]
    gathers, masks = [], []
    where = torch.empty(len(ids), dtype=torch.long)  # each text's first slot in the layout
    offset = 0
    for group in groups:
        index = torch.tensor(group)
        longest = max(sizes[i] for i in group)
        slot = torch.arange(longest)
        real = slot[None, :] < lengths[index, None]  # (n, L)
        gathers.append(torch.where(real, starts[index, None] + slot, total).reshape(-1))
        masks.append(
            torch.zeros(len(group), 1, 1, longest).masked_fill(~real[:, None, None, :], -torch.inf)
        )
        where[index] = offset + torch.arange(len(group)) * longest
        offset += len(group) * longest
    # Token t of text b sits at where[b] + t in the layout, and at starts[b] + t packed.
    position_ids = torch.arange(total) - torch.repeat_interleave(starts, lengths)
    types = encoded.get("token_type_ids")
    return {
        "input_ids": torch.tensor([t for x in ids for t in x]),
        "token_type_ids": (
            torch.tensor([t for i in chunk for t in types[i]])
            if types is not None
            else torch.zeros(total, dtype=torch.long)
        ),
        "position_ids": position_ids,
        "gather": torch.cat(gathers) if len(gathers) > 1 else gathers[0],
        "scatter": torch.repeat_interleave(where, lengths) + position_ids,
        "mask": tuple(masks) if split_attention else masks[0],
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
    masks = inputs["mask"]
    masks = [m.to(hidden.dtype) for m in (masks if isinstance(masks, tuple) else (masks,))]
    for i, layer in enumerate(model.encoder.layer):
        attn = layer.attention.self
        heads, size = attn.num_attention_heads, attn.attention_head_size
        if qkv is None:
            rows = torch.cat([attn.query(hidden), attn.key(hidden), attn.value(hidden)], dim=1)
        else:
            rows = qkv[i](hidden)
        rows = torch.cat([rows, rows.new_zeros(1, rows.shape[1])]).index_select(0, gather)
        parts, start = [], 0
        for mask in masks:  # one padded layout per attention group, one after the other
            texts, longest = mask.shape[0], mask.shape[-1]
            group = rows[start : start + texts * longest] if len(masks) > 1 else rows
            start += texts * longest
            q, k, v = group.view(texts, longest, 3, heads, size).permute(2, 0, 3, 1, 4)
            context = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=attn.scaling)
            parts.append(context.transpose(1, 2).reshape(texts * longest, heads * size))
        context = torch.cat(parts) if len(parts) > 1 else parts[0]
        attended = layer.attention.output(context.index_select(0, scatter), hidden)
        hidden = layer.output(layer.intermediate(attended), attended)
    return hidden


def pool_packed(hidden: Any, inputs: dict[str, Any], mode: Pooling) -> Any:
    """Pool packed token states (T, dim) into one vector per text (B, dim)."""
    import torch

    lengths = inputs["lengths"]
    if mode is Pooling.CLS:
        return hidden.index_select(0, torch.cumsum(lengths, 0) - lengths)
    segment = torch.repeat_interleave(torch.arange(len(lengths)), lengths)
    if mode is Pooling.MAX:
        floor = hidden.new_full((len(lengths), hidden.shape[1]), float("-inf"))
        return floor.scatter_reduce_(0, segment[:, None].expand_as(hidden), hidden, "amax")
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


DEFAULT_PACK_TOKENS = 256
"""The pack cap until :meth:`Embedder.tune` measures one."""


class Embedder:
    """Embed texts into vectors (float32, L2-normalised by default)."""

    role = ModelRole.EMBEDDING
    # Packs run attention per group of similar lengths (:func:`plan_attention`); a runtime
    # whose graph takes one padded layout (ONNX) turns this off.
    split_attention = True

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
        pack_tokens: int = DEFAULT_PACK_TOKENS,
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
        if not isinstance(pack_tokens, int) or isinstance(pack_tokens, bool) or pack_tokens < 1:
            raise ValidationError(f"pack_tokens must be a positive integer, not {pack_tokens!r}")
        self.pack_tokens = pack_tokens
        self.tuning = TuningSource.FIXED  # where the Linear form and pack cap came from

    @classmethod
    def from_path(
        cls,
        path: str | Path,
        *,
        dtype: str | None = None,
        linear: str = "auto",
        pack_tokens: int | str = "auto",
        **kwargs: Any,
    ) -> Embedder:
        """Load ``path`` and wrap it. ``linear="auto"`` keeps the form of Linears that runs
        fastest here, and ``pack_tokens="auto"`` sizes packs by a measurement
        (:meth:`tune`)."""
        loaded = load_model(path, ModelRole.EMBEDDING, dtype=dtype, linear=linear)
        return cls.tuned(loaded, linear=linear, pack_tokens=pack_tokens, **kwargs)

    @classmethod
    def tuned(
        cls,
        loaded: LoadedModel,
        *,
        linear: str,
        pack_tokens: int | str,
        cache: TuningCache | None = None,
        **kwargs: Any,
    ) -> Embedder:
        """Wrap ``loaded`` and measure what its options leave at ``"auto"`` (:meth:`tune`):
        the Linears' form (``loaded`` already has the form ``linear`` asks for) and the pack
        cap (a number fixes it). With ``cache``, an answer kept there is used instead of
        measuring, and a new measurement is kept."""
        if pack_tokens != "auto":
            kwargs["pack_tokens"] = pack_tokens
        embedder = cls(loaded, **kwargs)
        embedder.tune_with(cache, linear=linear == "auto", pack_tokens=pack_tokens == "auto")
        return embedder

    def tune_with(
        self, cache: TuningCache | None, *, linear: bool = True, pack_tokens: bool = True
    ) -> TuningSource:
        """:meth:`tune` through ``cache`` (None: measure); sets and returns :attr:`tuning`."""
        if cache is not None:
            self.tuning = cache.tune(self, linear=linear, pack_tokens=pack_tokens)
        elif linear or pack_tokens:
            self.tune(linear=linear, pack_tokens=pack_tokens)
            self.tuning = TuningSource.MEASURED
        return self.tuning

    def tune(self, *, linear: bool = True, pack_tokens: bool = True) -> None:
        """Measure this machine (:mod:`open_autoglm.ml.text.tuning`): the Linears' form, then
        the pack cap. ~4-5 s for MiniLM at one thread."""
        from open_autoglm.ml.text import tuning

        if linear:
            tuning.tune_linear(self)
        if pack_tokens:
            tuning.tune_pack_tokens(self)

    @property
    def memory_bytes(self) -> int:
        return self.loaded.memory_bytes

    @property
    def linear(self) -> str:
        """What computes the float32 Linears now: ``"onednn"``, ``"mkl"`` or ``"torch"``."""
        from open_autoglm.ml.text.linear import linear_form

        return linear_form(self.model)

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
            inputs = pack_inputs(encoded, chunk, split_attention=self.split_attention)
            return pool_packed(self._packed_hidden_states(inputs), inputs, mode)
        keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in encoded]
        batch = self.tokenizer.pad(
            {k: [encoded[k][i] for i in chunk] for k in keys}, return_tensors="pt"
        )
        return pool(self._hidden_states(batch), batch["attention_mask"], mode)
