"""Sampling parameters, next-token choice and stop-string handling for one sequence.

Pure functions over one sequence's logits, so a request's choice depends only on its own
logits and its own ``torch.Generator``: batch composition cannot change what it samples.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from open_autoglm.errors import ValidationError

__all__ = [
    "DEFAULTS",
    "SamplingParams",
    "find_stop",
    "make_generator",
    "safe_text_end",
    "sample_next_token",
]

MAX_TOKENS_LIMIT = 4096


@dataclass(frozen=True)
class SamplingParams:
    """How one request decodes. ``temperature == 0`` means greedy (argmax).

    The field defaults are the defaults of every generation entry point (the
    ``text-generation`` task type and the OpenAI routes read them from :data:`DEFAULTS`).
    Greedy by default, so the same request gives the same answer.
    """

    max_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0  # 0 = no top-k filter
    stop: tuple[str, ...] = ()
    seed: int | None = None
    # OpenAI's penalties over the tokens generated so far; applied by the llama.cpp backend.
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0

    def __post_init__(self) -> None:
        problems: list[str] = []
        if not 1 <= self.max_tokens <= MAX_TOKENS_LIMIT:
            problems.append(f"max_tokens must be in [1, {MAX_TOKENS_LIMIT}]")
        if not 0.0 <= self.temperature <= 2.0:
            problems.append("temperature must be in [0, 2]")
        if not 0.0 < self.top_p <= 1.0:
            problems.append("top_p must be in (0, 1]")
        if self.top_k < 0:
            problems.append("top_k must be >= 0")
        for name in ("frequency_penalty", "presence_penalty"):
            if not -2.0 <= getattr(self, name) <= 2.0:
                problems.append(f"{name} must be in [-2, 2]")
        if any(not s for s in self.stop):
            problems.append("stop strings must be non-empty")
        if problems:
            raise ValidationError(
                "; ".join(problems), details=[{"loc": ["params"], "msg": p} for p in problems]
            )

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    @property
    def penalised(self) -> bool:
        return bool(self.frequency_penalty or self.presence_penalty)


DEFAULTS = SamplingParams()


def make_generator(seed: int | None) -> Any:
    """A CPU ``torch.Generator`` seeded with ``seed``, or from OS entropy when None."""
    import torch

    gen = torch.Generator(device="cpu")
    if seed is None:
        gen.seed()
    else:
        gen.manual_seed(seed)
    return gen


def sample_next_token(logits: Any, params: SamplingParams, generator: Any) -> int:
    """Pick the next token id from one sequence's ``logits`` of shape (vocab,)."""
    import torch

    logits = logits.float()
    if params.greedy:
        return int(torch.argmax(logits).item())
    logits = logits / params.temperature
    if params.top_k > 0 and params.top_k < logits.shape[-1]:
        kth = torch.topk(logits, params.top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        # Drop tokens once the mass before them already reaches top_p; the first always stays.
        drop_sorted = (torch.cumsum(probs, dim=-1) - probs) >= params.top_p
        drop = torch.zeros_like(drop_sorted).scatter(0, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator).item())


def find_stop(text: str, stops: Sequence[str]) -> int:
    """Index where the earliest stop string starts in ``text``, or -1."""
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(hits) if hits else -1


def safe_text_end(text: str, stops: Sequence[str]) -> int:
    """How much of ``text`` can be streamed now without leaking a stop string's prefix.

    Text ending in a possible start of a stop string, or in an incomplete UTF-8 character
    (decoded as U+FFFD), is held back until the next token settles it.
    """
    end = len(text)
    while end > 0 and text[end - 1] == "\ufffd":
        end -= 1
    held = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, end), 0, -1):
            if text[end - n : end] == stop[:n]:
                held = max(held, n)
                break
    return end - held
