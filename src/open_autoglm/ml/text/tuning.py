"""Measure this machine at load: the form of an embedding model's Linears and its pack cap.

What runs fastest depends on the CPU (which kernels MKL picks, how large the caches are),
so :meth:`Embedder.tune <open_autoglm.ml.text.embedding.Embedder.tune>` times the model's
own packed forward on synthetic packs and keeps the winner:

- :func:`tune_linear`: the form of the Linears (``ml/text/linear.py``): torch's own, oneDNN
  on a prepacked weight, or MKL on a prepacked weight.
- :func:`tune_pack_tokens`: the token cap of a pack. A pack pays a fixed cost (every weight
  streamed once), so a bigger cap means fewer packs per call, as long as a full pack is not
  dearer per token once its activations outgrow the core's cache.

Both together take a few seconds per model at one thread.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["PACK_CANDIDATES", "synthetic_packs", "time_packs", "tune_linear", "tune_pack_tokens"]

PACK_CANDIDATES = (128, 256, 512, 1024)
"""Pack sizes :func:`tune_pack_tokens` tries (tokens per pack)."""

Packs = dict[int, tuple[list[dict[str, Any]], int]]


def tune_linear(embedder: Any, *, sizes: Sequence[int] = (64, 384), margin: float = 0.03) -> str:
    """Keep the form of Linears that runs ``embedder``'s packed forward fastest here.

    Times packs of about ``sizes`` tokens in every form usable here (torch's own, oneDNN,
    MKL with a packed weight) and keeps the cheapest per token, where MKL's packed form is
    the one to beat: it is torch's own product without the repacking of the weight on every
    call (the same result bit for bit from 16 rows), so it cannot be slower but by noise.
    Every other form counts only if it is more than ``margin`` faster than it. Without MKL
    the same holds for torch's own Linears, which then keep a tie (no packed copies in
    memory). Returns what computes the Linears now (unchanged when the model has no packed
    layers or does not run packed).

    The margin keeps a shared machine's noise from picking a form that is slower in steady
    state.
    """
    from open_autoglm.ml.text.linear import LinearChoice

    model = embedder.model
    choice = LinearChoice(model) if embedder.packed and model is not None else None
    if choice is None or not choice.slots:
        return str(embedder.linear)
    ways = {form: functools.partial(choice.use, form) for form in choice.forms}
    best = time_packs(embedder, synthetic_packs(embedder, sizes, variants=3), ways, rounds=2)
    cost = {w: sum(t for (way, _), t in best.items() if way == w) for w in ways}
    base = "mkl" if "mkl" in cost else "torch"
    way = min(cost, key=lambda w: cost[w] * (1.0 if w == base else 1 / (1 - margin)))
    choice.use(way)
    embedder.linear_timings = {w: round(c * 1e6, 2) for w, c in cost.items()}  # summed us/token
    return way


def tune_pack_tokens(
    embedder: Any, candidates: Sequence[int] = PACK_CANDIDATES, *, margin: float = 0.05
) -> int:
    """Set ``embedder.pack_tokens`` to the largest candidate whose full pack costs no more
    per token than the cheapest (within ``margin``); returns it.
    """
    if not embedder.packed:
        return int(embedder.pack_tokens)
    best = time_packs(embedder, synthetic_packs(embedder, candidates, variants=1))
    per_token = {size: t for (_, size), t in best.items()}
    cheapest = min(per_token.values())
    embedder.pack_tokens = max(s for s, t in per_token.items() if t <= cheapest * (1 + margin))
    embedder.pack_timings = {s: round(t * 1e6, 2) for s, t in per_token.items()}  # us/token
    return int(embedder.pack_tokens)


def synthetic_packs(
    embedder: Any, sizes: Sequence[int], *, text_tokens: int = 32, variants: int = 3
) -> Packs:
    """Per size, ``variants`` packs of texts of mixed lengths around ``text_tokens``,
    holding between half the size and the size in all: ``size -> (packs, tokens)``.

    Real calls vary in shape from one to the next, and timing one pack again and again
    misleads: oneDNN compiles its kernels per row count, so a repeated shape flatters it.
    Token ids do not change the cost.
    """
    from open_autoglm.ml.text.embedding import pack_inputs

    cap, most = int(embedder.max_length), int(embedder.batch_size)
    mean = max(4, min(text_tokens, cap))
    vocab = max(2, len(embedder.tokenizer))
    out: Packs = {}
    for size in sorted({min(s, most * mean) for s in sizes}):
        packs, tokens = [], 0
        for v in range(variants):
            goal = max(1, size - (size * v) // (2 * variants))
            lengths: list[int] = []
            while sum(lengths) < goal and len(lengths) < most:
                k = len(lengths) + v
                lengths.append(min(cap, mean - mean // 4 + (k * 7) % (mean // 2 + 1)))
            ids = [[(7919 * j + 101) % vocab for j in range(n)] for n in lengths]
            encoded = {"input_ids": ids, "token_type_ids": [[0] * n for n in lengths]}
            split = embedder.split_attention
            packs.append(pack_inputs(encoded, range(len(ids)), split_attention=split))
            tokens += sum(lengths)
        out[size] = (packs, tokens)
    return out


def time_packs(
    embedder: Any,
    packs: Packs,
    ways: Mapping[str, Callable[[], None]] | None = None,
    *,
    rounds: int = 3,
) -> dict[tuple[str, int], float]:
    """Best seconds per token of ``embedder``'s packed forward for each (way, pack size).

    ``ways`` maps a name to a setter run before that way's passes (default: one way, as the
    model is). Ways and sizes are interleaved, alternating direction each round, so drift on
    a shared machine spreads over all of them; the first round compiles kernels and is not
    timed.
    """
    import torch

    ways = ways or {"": lambda: None}
    best = {(w, size): float("inf") for w in ways for size in packs}
    order = [(w, size) for w in ways for size in packs]
    with torch.inference_mode():
        for round_ in range(rounds + 1):
            for w, size in order if round_ % 2 else reversed(order):
                ways[w]()
                group, tokens = packs[size]
                start = time.perf_counter()
                for inputs in group:
                    embedder._packed_hidden_states(inputs)
                if round_:
                    elapsed = (time.perf_counter() - start) / tokens
                    best[(w, size)] = min(best[(w, size)], elapsed)
    return best
