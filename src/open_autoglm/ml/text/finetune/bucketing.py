"""Length bucketing: batches of texts of similar length, in an order set by seed and epoch.

Padding a batch to its longest text wastes the work on the padding; sorting the whole data by
length would make every epoch's batches the same and put all the long texts together. So the
rows are shuffled, cut into chunks of ``chunk_batches`` batches, sorted by length within a
chunk and cut into batches, and the batches are shuffled. Every rank of a distributed run
calls this with the same ``(seed, epoch)`` and gets the same list.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

__all__ = ["bucketed_batches", "padded_tokens"]


def bucketed_batches(
    rows: Sequence[int],
    lengths: Sequence[int],
    *,
    batch_size: int,
    seed: int,
    epoch: int,
    chunk_batches: int = 50,
) -> list[list[int]]:
    """Batches of row ids (from ``rows``) for one epoch; ``lengths[r]`` is row ``r``'s tokens.

    Every row appears exactly once; the last batch of a chunk may be short.
    """
    rng = random.Random(seed * 1_000_003 + epoch)
    order = list(rows)
    rng.shuffle(order)
    chunk = batch_size * chunk_batches
    batches: list[list[int]] = []
    for start in range(0, len(order), chunk):
        # stable sort: equal lengths keep the shuffled order
        part = sorted(order[start : start + chunk], key=lambda r: lengths[r])
        batches += [part[i : i + batch_size] for i in range(0, len(part), batch_size)]
    rng.shuffle(batches)
    return batches


def padded_tokens(batches: Sequence[Sequence[int]], lengths: Sequence[int]) -> int:
    """Tokens the batches take once each is padded to its longest row (what bucketing saves)."""
    return sum(max(lengths[r] for r in batch) * len(batch) for batch in batches if batch)
