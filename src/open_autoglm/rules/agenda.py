"""The agenda: activations ordered by salience, then a CLIPS conflict-resolution strategy.

One binary heap per agenda group; an entry is a tuple whose prefix is the sort key and whose
last element is the activation, so ordering is decided by C tuple comparison. Removal is lazy:
a removed activation is flagged dead and skipped at pop; the heap is rebuilt when dead entries
dominate, which keeps both push and removal O(log n) amortised.
"""

from __future__ import annotations

import enum
import heapq
from collections.abc import Iterator
from typing import Any

__all__ = ["MAIN", "Activation", "Agenda", "Strategy"]

MAIN = "MAIN"


class Strategy(enum.StrEnum):
    """Conflict resolution among activations of equal salience (CLIPS semantics).

    depth: newest activation first. breadth: oldest first. lex: compare the recency (time tags)
    of the matched facts, most recent first, sorted descending, element by element; a longer
    list wins a tie, then higher specificity. mea: the recency of the fact matching the first
    pattern decides first, then lex.
    """

    DEPTH = "depth"
    BREADTH = "breadth"
    LEX = "lex"
    MEA = "mea"


class Activation:
    """A rule instance ready to fire: a terminal node plus the token that reached it."""

    __slots__ = (
        "alive",
        "fired",
        "group",
        "rule",
        "salience",
        "seq",
        "supported",
        "terminal",
        "token",
    )

    def __init__(self, terminal: Any, token: tuple[Any, ...], seq: int) -> None:
        self.terminal = terminal
        self.rule = terminal.rule
        self.token = token
        self.seq = seq
        self.salience: int = self.rule.salience
        self.group: str = self.rule.group
        self.alive = True
        self.fired = False
        # Facts this activation asserted logically (truth maintenance); None until it has any.
        self.supported: list[Any] | None = None

    def __repr__(self) -> str:
        ids = ",".join(f"f-{f.id}" for f in self.token)
        return f"<Activation {self.rule.name} [{ids}] salience={self.salience}>"


def _lex_key(token: tuple[Any, ...]) -> tuple[int, ...]:
    # Negated tags sorted ascending == tags descending; the trailing 0 sorts after any negated
    # tag, so when one list is a prefix of the other the longer one comes first (CLIPS rule).
    return (*sorted([-f.tag for f in token]), 0)


class Agenda:
    """Activations per agenda group, and the focus stack that picks the group to fire from."""

    def __init__(self, strategy: Strategy = Strategy.DEPTH) -> None:
        self.strategy = Strategy(strategy)
        self._heaps: dict[str, list[tuple[Any, ...]]] = {}
        self._live: dict[str, int] = {}
        self._dead: dict[str, int] = {}
        self.focus_stack: list[str] = [MAIN]

    def __len__(self) -> int:
        return sum(self._live.values())

    def _entry(self, act: Activation) -> tuple[Any, ...]:
        s = self.strategy
        if s is Strategy.DEPTH:
            return (-act.salience, -act.seq, act)
        if s is Strategy.BREADTH:
            return (-act.salience, act.seq, act)
        lex = _lex_key(act.token)
        spec = -act.rule.specificity
        if s is Strategy.LEX:
            return (-act.salience, lex, spec, -act.seq, act)
        token = act.terminal.declared(act.token)
        first = -token[0].tag if token else 0
        return (-act.salience, first, lex, spec, -act.seq, act)

    def push(self, act: Activation) -> None:
        g = act.group
        heap = self._heaps.get(g)
        if heap is None:
            heap = self._heaps[g] = []
            self._live[g] = 0
            self._dead[g] = 0
        heapq.heappush(heap, self._entry(act))
        self._live[g] += 1

    def remove(self, act: Activation) -> None:
        """Take an activation off the agenda (its token was retracted before it fired)."""
        if not act.alive:
            return
        act.alive = False
        g = act.group
        self._live[g] -= 1
        dead = self._dead[g] + 1
        if dead > 64 and dead > 2 * self._live[g]:
            heap = [e for e in self._heaps[g] if e[-1].alive]
            heapq.heapify(heap)
            self._heaps[g] = heap
            dead = 0
        self._dead[g] = dead

    def pop(self) -> Activation | None:
        """Remove and return the next activation to fire from the focused group, or None."""
        while self.focus_stack:
            g = self.focus_stack[-1]
            heap = self._heaps.get(g)
            while heap:
                act: Activation = heapq.heappop(heap)[-1]
                if act.alive:
                    act.alive = False
                    self._live[g] -= 1
                    return act
                self._dead[g] -= 1
            if len(self.focus_stack) == 1:
                return None
            self.focus_stack.pop()
        return None

    def focus(self, group: str) -> None:
        """Push ``group`` on the focus stack: its activations fire before the current group's."""
        if self.focus_stack[-1] != group:
            self.focus_stack.append(group)

    def set_strategy(self, strategy: Strategy) -> None:
        """Switch strategy; pending activations are re-ordered under the new one."""
        self.strategy = Strategy(strategy)
        for g, heap in self._heaps.items():
            live = [e[-1] for e in heap if e[-1].alive]
            self._heaps[g] = [self._entry(a) for a in live]
            heapq.heapify(self._heaps[g])
            self._dead[g] = 0

    def activations(self, group: str | None = None) -> list[Activation]:
        """Live activations in firing order (of their group), for listing and tests."""
        groups = [group] if group is not None else list(self._heaps)
        out: list[Activation] = []
        for g in groups:
            out += [e[-1] for e in sorted(self._heaps.get(g, [])) if e[-1].alive]
        return out

    def __iter__(self) -> Iterator[Activation]:
        return iter(self.activations())

    def clear(self) -> None:
        for heap in self._heaps.values():
            for e in heap:
                e[-1].alive = False
        self._heaps.clear()
        self._live.clear()
        self._dead.clear()
        self.focus_stack = [MAIN]
