"""Deterministic mixed-length English sentences (6-40 words) for serving benchmarks."""

from __future__ import annotations

import random

__all__ = ["mixed_sentences"]

_WORDS = (
    "the a model graph node edge task result server request batch token queue worker fast slow "
    "small large network language vector embedding user system data test value score label text "
    "runs stores reads writes returns waits learns predicts answers measures schedules loads "
    "quickly carefully today again always never often under over with from into about between"
).split()


def mixed_sentences(n: int, *, seed: int = 0, min_words: int = 6, max_words: int = 40) -> list[str]:
    """``n`` sentences with word counts uniform in [min_words, max_words], same for a seed."""
    rnd = random.Random(seed)
    return [
        " ".join(rnd.choice(_WORDS) for _ in range(rnd.randint(min_words, max_words))).capitalize()
        + "."
        for _ in range(n)
    ]
