"""The agenda: activations ordered by salience, then a CLIPS conflict-resolution strategy.

A pending activation is only an entry ``(terminal, token, seq)`` plus
``terminal.activations[token] = seq``; most activations are removed before they fire (a
control fact changes and takes a whole cross product with it), so the Activation object is
made only when one is popped to fire. Removal is lazy: the engine drops the mapping, and an
entry whose terminal no longer maps its token to the same ``seq`` object is skipped.

Under ``depth`` (newest first, the default) each group keeps one stack per salience: entries
arrive in ``seq`` order, so the top is the newest and push/pop are list appends/pops. The other
strategies use one binary heap per group, the sort key in front of each entry so ordering is
decided by C tuple comparison. Dead entries are dropped at pop, from the top of a stack before
a push, and by a rebuild when they dominate.
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


Entry = tuple[Any, tuple[Any, ...], int]  # (terminal, token, seq)


def _live(e: Entry) -> bool:
    return e[0].activations.get(e[1]) is e[2]


class Agenda:
    """Activations per agenda group, and the focus stack that picks the group to fire from."""

    def __init__(self, strategy: Strategy = Strategy.DEPTH) -> None:
        self.strategy = Strategy(strategy)
        # depth: group -> salience -> stack of entries; saliences highest first per group
        self._stacks: dict[str, dict[int, list[Entry]]] = {}
        self._levels: dict[str, list[int]] = {}
        # other strategies: group -> heap of (*sort key, terminal, token, seq)
        self._heaps: dict[str, list[tuple[Any, ...]]] = {}
        self._live: dict[str, int] = {}
        self._dead: dict[str, int] = {}
        self.focus_stack: list[str] = [MAIN]

    def __len__(self) -> int:
        return sum(self._live.values())

    def _key(self, e: Entry) -> tuple[Any, ...]:
        terminal, token, seq = e
        s = self.strategy
        salience = -terminal.rule.salience
        if s is Strategy.BREADTH:
            return (salience, seq, *e)
        if s is Strategy.DEPTH:
            return (salience, -seq, *e)
        lex = _lex_key(token)
        spec = -terminal.rule.specificity
        if s is Strategy.LEX:
            return (salience, lex, spec, -seq, *e)
        declared = terminal.declared(token)
        first = -declared[0].tag if declared else 0
        return (salience, first, lex, spec, -seq, *e)

    def push(self, terminal: Any, token: tuple[Any, ...], seq: int) -> None:
        """Queue one activation; the caller has set ``terminal.activations[token] = seq``."""
        self.push_many([(terminal, token, seq)])

    def push_many(self, entries: list[Entry]) -> None:
        """Queue activations given in increasing ``seq`` order."""
        live = self._live
        if self.strategy is not Strategy.DEPTH:
            for e in entries:
                g = e[0].rule.group
                if g not in live:
                    self._new_group(g)
                heapq.heappush(self._heaps[g], self._key(e))
                live[g] += 1
            return
        stack: list[Entry] = []
        group: str = ""
        salience: int | None = None
        for e in entries:
            rule = e[0].rule
            if rule.salience != salience or rule.group != group:
                group, salience = rule.group, rule.salience
                stack = self._stack(group, salience)
            stack.append(e)
            live[group] += 1

    def _new_group(self, g: str) -> None:
        self._live[g] = 0
        self._dead[g] = 0
        self._heaps[g] = []
        self._stacks[g] = {}
        self._levels[g] = []

    def _stack(self, group: str, salience: int) -> list[Entry]:
        if group not in self._live:
            self._new_group(group)
        stacks = self._stacks[group]
        stack = stacks.get(salience)
        if stack is None:
            stack = stacks[salience] = []
            self._levels[group] = sorted(stacks, reverse=True)
            return stack
        while stack:  # dead entries on top go now, before newer ones bury them
            terminal, token, seq = stack[-1]
            if terminal.activations.get(token) is seq:
                break
            stack.pop()
            self._dead[group] -= 1
        return stack

    def discard(self, group: str) -> None:
        """Count one queued activation of ``group`` as removed (its mapping already dropped)."""
        self._live[group] -= 1
        dead = self._dead[group] + 1
        # Dead entries mostly sit on top and go at the next push or pop; a rebuild is only for
        # those buried under live ones, so it waits until they are many.
        if dead > 65_536 and dead > 2 * self._live[group]:
            self._compact(group)
            dead = 0
        self._dead[group] = dead

    def _compact(self, group: str) -> None:
        heap = [e for e in self._heaps[group] if e[-3].activations.get(e[-2]) is e[-1]]
        heapq.heapify(heap)
        self._heaps[group] = heap
        for salience, stack in self._stacks[group].items():
            self._stacks[group][salience] = [e for e in stack if e[0].activations.get(e[1]) is e[2]]

    def pop(self) -> Entry | None:
        """Remove and return the next ``(terminal, token, seq)`` to fire, or None."""
        depth = self.strategy is Strategy.DEPTH
        while self.focus_stack:
            g = self.focus_stack[-1]
            if g in self._live:
                e = self._pop_stack(g) if depth else self._pop_heap(g)
                if e is not None:
                    self._live[g] -= 1
                    return e
            if len(self.focus_stack) == 1:
                return None
            self.focus_stack.pop()
        return None

    def _pop_stack(self, g: str) -> Entry | None:
        stacks = self._stacks[g]
        for salience in self._levels[g]:
            stack = stacks[salience]
            while stack:
                e = stack.pop()
                if e[0].activations.get(e[1]) is e[2]:
                    return e
                self._dead[g] -= 1
        return None

    def _pop_heap(self, g: str) -> Entry | None:
        heap = self._heaps[g]
        while heap:
            k = heapq.heappop(heap)
            if k[-3].activations.get(k[-2]) is k[-1]:
                return k[-3], k[-2], k[-1]
            self._dead[g] -= 1
        return None

    def focus(self, group: str) -> None:
        """Push ``group`` on the focus stack: its activations fire before the current group's."""
        if self.focus_stack[-1] != group:
            self.focus_stack.append(group)

    def _entries(self, group: str) -> list[Entry]:
        out = [(k[-3], k[-2], k[-1]) for k in self._heaps.get(group, [])]
        for stack in self._stacks.get(group, {}).values():
            out += stack
        return [e for e in out if _live(e)]

    def set_strategy(self, strategy: Strategy) -> None:
        """Switch strategy; pending activations are re-ordered under the new one."""
        groups = {g: sorted(self._entries(g), key=lambda e: e[2]) for g in self._live}
        self.strategy = Strategy(strategy)
        for g, entries in groups.items():
            self._new_group(g)
            self.push_many(entries)

    def activations(self, group: str | None = None) -> list[Activation]:
        """Live activations in firing order (of their group), for listing and tests."""
        groups = [group] if group is not None else list(self._live)
        out: list[Activation] = []
        for g in groups:
            out += [Activation(*k[-3:]) for k in sorted(map(self._key, self._entries(g)))]
        return out

    def __iter__(self) -> Iterator[Activation]:
        return iter(self.activations())

    def clear(self) -> None:
        for g in list(self._live):
            for terminal, token, _ in self._entries(g):
                del terminal.activations[token]
        self._stacks.clear()
        self._levels.clear()
        self._heaps.clear()
        self._live.clear()
        self._dead.clear()
        self.focus_stack = [MAIN]
