"""Sequence slots of one llama.cpp context, and the prompt (prefix) cache they carry.

A context holds ``n`` sequences, each with its own KV cache. A slot stays filled after
its request finishes, so the next request whose prompt shares a prefix with what a free slot
holds (a chat's earlier turns, a shared system prompt) skips prefilling that prefix. Pure
bookkeeping, no llama.cpp calls: the batch does the KV edits the returned plan asks for.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["SlotPlan", "SlotTable"]


@dataclass
class _Slot:
    seq_id: int
    tokens: list[int] = field(default_factory=list)  # what its KV cache holds, in order
    busy: bool = False
    last_used: int = 0


@dataclass(frozen=True)
class SlotPlan:
    """Where a prompt goes: sequence ``seq_id`` keeps its first ``keep`` cached tokens."""

    seq_id: int
    keep: int


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


class SlotTable:
    """Free/busy sequence ids and the tokens each one's KV cache holds."""

    def __init__(self, n: int) -> None:
        self._slots = [_Slot(i) for i in range(n)]
        self._clock = itertools.count(1)

    @property
    def size(self) -> int:
        return len(self._slots)

    @property
    def free(self) -> int:
        return sum(not s.busy for s in self._slots)

    def acquire(self, prompt: Sequence[int]) -> SlotPlan:
        """Take the free slot sharing the longest prefix with ``prompt``, else the lowest id.

        Low ids first keep the busy ids consecutive, which llama.cpp decodes in one pass.
        At least the prompt's last two tokens are always fed again: the last one's logits pick
        the first token, and a one-token chunk would take other attention kernels than the
        chunk of several a prompt is otherwise fed in (different rounding: a greedy output
        could then depend on what the cache held).
        """
        free = [s for s in self._slots if not s.busy]
        if not free:
            raise RuntimeError("no free sequence slot")
        best = max(free, key=lambda s: (common_prefix(s.tokens, prompt), -s.seq_id))
        keep = min(common_prefix(best.tokens, prompt), max(0, len(prompt) - 2))
        best.busy = True
        best.last_used = next(self._clock)
        del best.tokens[keep:]
        return SlotPlan(best.seq_id, keep)

    def fed(self, seq_id: int, tokens: Sequence[int]) -> None:
        """Record tokens just decoded into ``seq_id``'s KV cache."""
        self._slots[seq_id].tokens.extend(tokens)

    def release(self, seq_id: int) -> None:
        """Free ``seq_id``; its KV cache stays as a prompt cache for the next request."""
        self._slots[seq_id].busy = False

    def idle(self) -> list[int]:
        """Free slots that still hold cached tokens."""
        return [s.seq_id for s in self._slots if not s.busy and s.tokens]

    def truncate(self, seq_id: int, n: int) -> None:
        """Record that ``seq_id``'s KV cache now holds only its first ``n`` tokens."""
        del self._slots[seq_id].tokens[n:]

    def cached(self, seq_id: int) -> int:
        return len(self._slots[seq_id].tokens)
