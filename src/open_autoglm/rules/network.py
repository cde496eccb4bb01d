"""The Rete network: alpha memories behind a hashed dispatch, hash-indexed beta joins.

Shape:

    fact --type+equality-constant hash--> AlphaMemory --right--> JoinNode / NegativeNode
                                                                    |
    root BetaMemory (the empty token) --left--> JoinNode --> BetaMemory --> ... --> TerminalNode

A token is a plain tuple of the facts matched by the positive patterns so far; tuples hash and
compare element-wise by fact identity, so memories are dicts used as ordered sets and removal is
one lookup. Every join is indexed on its equality tests on both sides (``AlphaMemory.index`` and
``BetaMemory.index``), so an activation touches only the partners with the same key.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from open_autoglm.rules.facts import Fact
from open_autoglm.rules.model import Rule

__all__ = [
    "AlphaMemory",
    "BetaMemory",
    "JoinNode",
    "JoinTest",
    "Loc",
    "NegativeNode",
    "Producer",
    "TerminalNode",
    "TerminalSink",
    "TestNode",
    "Token",
    "safe_call",
    "value_getter",
]

Token = tuple[Fact, ...]
# Where a variable's value lives: (index of the fact in the token, field) -- field None means
# the fact itself (``?f <- (pattern)``).
Loc = tuple[int, str | None]


class TerminalSink(Protocol):
    """What a terminal node reports to: the engine's agenda side."""

    def activate(self, terminal: TerminalNode, token: Token) -> None: ...

    def deactivate(self, terminal: TerminalNode, token: Token) -> None: ...

    def activate_many(self, terminal: TerminalNode, tokens: list[Token]) -> None: ...

    def deactivate_many(self, terminal: TerminalNode, tokens: list[Token]) -> None: ...


class AlphaMemory:
    """Facts passing one pattern's constant tests, with hash indexes for the joins on it."""

    __slots__ = ("facts", "indexes", "successors")

    def __init__(self) -> None:
        self.facts: dict[Fact, None] = {}
        # right-key fields -> (key function, key -> facts)
        self.indexes: dict[
            tuple[str, ...], tuple[Callable[[Fact], Any], dict[Any, dict[Fact, None]]]
        ] = {}
        # Descendants first: a fact reaching two joins of one rule through this memory must meet
        # the deeper join before the shallower one creates the token (else it is joined twice).
        self.successors: list[Any] = []

    def index(self, fields: tuple[str, ...]) -> dict[Any, dict[Fact, None]]:
        """Return (building if needed) the hash index of these facts on ``fields``."""
        found = self.indexes.get(fields)
        if found is None:
            key = operator.itemgetter(*fields)
            table: dict[Any, dict[Fact, None]] = {}
            for f in self.facts:
                table.setdefault(key(f), {})[f] = None
            found = self.indexes[fields] = (key, table)
        return found[1]

    def add(self, f: Fact) -> None:
        self.facts[f] = None
        for key, table in self.indexes.values():
            k = key(f)
            bucket = table.get(k)
            if bucket is None:
                table[k] = {f: None}
            else:
                bucket[f] = None
        for s in self.successors:
            s.right_add(f)

    def remove(self, f: Fact) -> None:
        if self.facts.pop(f, 0) is not None:
            return
        for key, table in self.indexes.values():
            k = key(f)
            bucket = table[k]
            del bucket[f]
            if not bucket:
                del table[k]
        for s in self.successors:
            s.right_remove(f)


class Producer:
    """A node that emits tokens to children (left activations)."""

    __slots__ = ("_memory", "children", "shared")

    def __init__(self) -> None:
        self.children: list[Any] = []
        self.shared: dict[Any, Any] = {}
        self._memory: BetaMemory | None = None

    def replay(self, child: Any) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def memory(self) -> BetaMemory:
        """Return the beta memory storing this node's output, creating and filling it once."""
        if self._memory is None:
            self._memory = BetaMemory()
            self.children.append(self._memory)
            self.replay(self._memory)
        return self._memory


class BetaMemory(Producer):
    """Stores tokens; joins below it read them through hash indexes on their left keys."""

    __slots__ = ("indexes", "tokens")

    def __init__(self) -> None:
        super().__init__()
        self.tokens: dict[Token, None] = {}
        self.indexes: dict[Any, tuple[Callable[[Token], Any], dict[Any, dict[Token, None]]]] = {}

    def memory(self) -> BetaMemory:
        return self

    def index(self, spec: Any, key: Callable[[Token], Any]) -> dict[Any, dict[Token, None]]:
        found = self.indexes.get(spec)
        if found is None:
            table: dict[Any, dict[Token, None]] = {}
            for t in self.tokens:
                table.setdefault(key(t), {})[t] = None
            found = self.indexes[spec] = (key, table)
        return found[1]

    def left_add(self, t: Token) -> None:
        self.tokens[t] = None
        for key, table in self.indexes.values():
            k = key(t)
            bucket = table.get(k)
            if bucket is None:
                table[k] = {t: None}
            else:
                bucket[t] = None
        for c in self.children:
            c.left_add(t)

    def left_remove(self, t: Token) -> None:
        if self.tokens.pop(t, 0) is not None:
            return
        for key, table in self.indexes.values():
            k = key(t)
            bucket = table[k]
            del bucket[t]
            if not bucket:
                del table[k]
        for c in self.children:
            c.left_remove(t)

    def replay(self, child: Any) -> None:
        for t in list(self.tokens):
            child.left_add(t)


JoinTest = Callable[[Token, Fact], bool]


class JoinNode(Producer):
    """Positive join of a beta memory with an alpha memory, hash-indexed on equality tests."""

    __slots__ = ("left", "left_index", "left_key", "right", "right_index", "right_key", "test")

    def __init__(
        self,
        left: BetaMemory,
        right: AlphaMemory,
        left_spec: tuple[Loc, ...],
        right_fields: tuple[str, ...],
        test: JoinTest | None,
    ) -> None:
        super().__init__()
        self.left = left
        self.right = right
        self.test = test
        if right_fields:
            self.left_key: Callable[[Token], Any] | None = _token_key(left_spec)
            self.right_key: Callable[[Fact], Any] | None = operator.itemgetter(*right_fields)
            self.right_index: dict[Any, dict[Fact, None]] = right.index(right_fields)
            self.left_index: dict[Any, dict[Token, None]] = left.index(left_spec, self.left_key)
        else:  # a cross product: every fact meets every token
            self.left_key = self.right_key = None
            self.right_index, self.left_index = {}, {}

    def _right_facts(self, t: Token) -> Iterable[Fact]:
        if self.left_key is None:
            return self.right.facts
        return self.right_index.get(self.left_key(t), ())

    def left_add(self, t: Token) -> None:
        facts = (
            self.right.facts if self.left_key is None else self.right_index.get(self.left_key(t))
        )
        if not facts:
            return
        test = self.test
        children = self.children
        for f in facts:
            if test is None or test(t, f):
                nt = (*t, f)
                for c in children:
                    c.left_add(nt)

    def left_remove(self, t: Token) -> None:
        facts = (
            self.right.facts if self.left_key is None else self.right_index.get(self.left_key(t))
        )
        if not facts:
            return
        test = self.test
        children = self.children
        for f in facts:
            if test is None or test(t, f):
                nt = (*t, f)
                for c in children:
                    c.left_remove(nt)

    def right_add(self, f: Fact) -> None:
        tokens = (
            self.left.tokens if self.right_key is None else self.left_index.get(self.right_key(f))
        )
        if not tokens:
            return
        test = self.test
        children = self.children
        if len(children) == 1 and type(children[0]) is TerminalNode:
            # The last join of a rule: one call for the whole cross product, not one per token.
            if test is None:
                children[0].add_many([(*t, f) for t in tokens])
            else:
                children[0].add_many([(*t, f) for t in tokens if test(t, f)])
            return
        for t in tokens:
            if test is None or test(t, f):
                nt = (*t, f)
                for c in children:
                    c.left_add(nt)

    def right_remove(self, f: Fact) -> None:
        tokens = (
            self.left.tokens if self.right_key is None else self.left_index.get(self.right_key(f))
        )
        if not tokens:
            return
        test = self.test
        children = self.children
        if len(children) == 1 and type(children[0]) is TerminalNode:
            if test is None:
                children[0].remove_many([(*t, f) for t in tokens])
            else:
                children[0].remove_many([(*t, f) for t in tokens if test(t, f)])
            return
        for t in tokens:
            if test is None or test(t, f):
                nt = (*t, f)
                for c in children:
                    c.left_remove(nt)

    def replay(self, child: Any) -> None:
        test = self.test
        for t in list(self.left.tokens):
            for f in list(self._right_facts(t)):
                if test is None or test(t, f):
                    child.left_add((*t, f))


class NegativeNode(Producer):
    """``not`` (or, with ``exists=True``, ``exists``): passes a token on while no (some) fact matches.

    Keeps, per left token, how many right facts match it; only 0 <-> 1 transitions propagate.
    The output token is the input token (the negated fact binds nothing).
    """

    __slots__ = (
        "counts",
        "exists",
        "index",
        "left",
        "left_key",
        "right",
        "right_index",
        "right_key",
        "test",
    )

    def __init__(
        self,
        left: BetaMemory,
        right: AlphaMemory,
        left_spec: tuple[Loc, ...],
        right_fields: tuple[str, ...],
        test: JoinTest | None,
        exists: bool,
    ) -> None:
        super().__init__()
        self.left = left
        self.right = right
        self.test = test
        self.exists = exists
        self.counts: dict[Token, int] = {}
        self.index: dict[Any, dict[Token, None]] = {}
        if right_fields:
            self.left_key: Callable[[Token], Any] | None = _token_key(left_spec)
            self.right_key: Callable[[Fact], Any] | None = operator.itemgetter(*right_fields)
            self.right_index: dict[Any, dict[Fact, None]] | None = right.index(right_fields)
        else:
            self.left_key = self.right_key = self.right_index = None
        left.replay(self)

    def left_add(self, t: Token) -> None:
        if self.left_key is None:
            facts: Iterable[Fact] = self.right.facts
            k = None
        else:
            k = self.left_key(t)
            facts = self.right_index.get(k, ())  # type: ignore[union-attr]
        test = self.test
        n = 0
        for f in facts:
            if test is None or test(t, f):
                n += 1
        self.counts[t] = n
        bucket = self.index.get(k)
        if bucket is None:
            self.index[k] = {t: None}
        else:
            bucket[t] = None
        if (n == 0) is not self.exists:
            for c in self.children:
                c.left_add(t)

    def left_remove(self, t: Token) -> None:
        n = self.counts.pop(t, None)
        if n is None:
            return
        k = None if self.left_key is None else self.left_key(t)
        bucket = self.index[k]
        del bucket[t]
        if not bucket:
            del self.index[k]
        if (n == 0) is not self.exists:
            for c in self.children:
                c.left_remove(t)

    def right_add(self, f: Fact) -> None:
        tokens = self.index.get(None if self.right_key is None else self.right_key(f))
        if not tokens:
            return
        test = self.test
        counts = self.counts
        for t in list(tokens):
            if test is None or test(t, f):
                n = counts[t]
                counts[t] = n + 1
                if n == 0:
                    for c in self.children:
                        if self.exists:
                            c.left_add(t)
                        else:
                            c.left_remove(t)

    def right_remove(self, f: Fact) -> None:
        tokens = self.index.get(None if self.right_key is None else self.right_key(f))
        if not tokens:
            return
        test = self.test
        counts = self.counts
        for t in list(tokens):
            if test is None or test(t, f):
                n = counts[t] - 1
                counts[t] = n
                if n == 0:
                    for c in self.children:
                        if self.exists:
                            c.left_remove(t)
                        else:
                            c.left_add(t)

    def replay(self, child: Any) -> None:
        for t, n in list(self.counts.items()):
            if (n == 0) is not self.exists:
                child.left_add(t)


class TestNode(Producer):
    """Filters tokens by a predicate over bound variables (used when no join can host it)."""

    __slots__ = ("parent", "predicate")

    def __init__(self, parent: Producer, predicate: Callable[[Token], bool]) -> None:
        super().__init__()
        self.parent = parent
        self.predicate = predicate

    def left_add(self, t: Token) -> None:
        if self.predicate(t):
            for c in self.children:
                c.left_add(t)

    def left_remove(self, t: Token) -> None:
        if self.predicate(t):
            for c in self.children:
                c.left_remove(t)

    def replay(self, child: Any) -> None:
        self.parent.replay(_Filter(self.predicate, child))


class _Filter:
    __slots__ = ("child", "predicate")

    def __init__(self, predicate: Callable[[Token], bool], child: Any) -> None:
        self.predicate = predicate
        self.child = child

    def left_add(self, t: Token) -> None:
        if self.predicate(t):
            self.child.left_add(t)


class TerminalNode:
    """End of a rule's chain: every token reaching it is an activation of ``rule``."""

    __slots__ = ("activations", "locs", "order", "rule", "sink", "variant")

    def __init__(
        self,
        rule: Rule,
        variant: int,
        locs: dict[str, Loc],
        sink: TerminalSink,
        order: tuple[int, ...] | None = None,
    ) -> None:
        # token index of each declared positive pattern, when the compiler reordered joins
        self.order = order
        # token -> its seq while pending on the agenda, its Activation once fired (kept for
        # refraction and truth maintenance), or a marker for a match its no_loop rule made
        self.activations: dict[Token, Any] = {}
        self.rule = rule
        self.variant = variant
        self.locs = locs
        self.sink = sink

    def left_add(self, t: Token) -> None:
        self.sink.activate(self, t)

    def left_remove(self, t: Token) -> None:
        self.sink.deactivate(self, t)

    def add_many(self, tokens: list[Token]) -> None:
        self.sink.activate_many(self, tokens)

    def remove_many(self, tokens: list[Token]) -> None:
        self.sink.deactivate_many(self, tokens)

    def declared(self, t: Token) -> Token:
        """Return the token's facts in the rule's declared pattern order."""
        order = self.order
        return t if order is None else tuple([t[i] for i in order])

    def bindings(self, t: Token) -> dict[str, Any]:
        """Return the variable values of one token of this rule."""
        return {name: (t[i] if fld is None else t[i][fld]) for name, (i, fld) in self.locs.items()}


def _token_key(spec: tuple[Loc, ...]) -> Callable[[Token], Any]:
    if len(spec) == 1:
        ((i, fld),) = spec
        if fld is None:
            return operator.itemgetter(i)
        return lambda t: t[i][fld]
    if len(spec) == 2 and all(fld is not None for _, fld in spec):
        (i1, f1), (i2, f2) = spec
        n1, n2 = str(f1), str(f2)
        return lambda t: (t[i1][n1], t[i2][n2])
    if len(spec) == 3 and all(fld is not None for _, fld in spec):
        (i1, f1), (i2, f2), (i3, f3) = spec
        n1, n2, n3 = str(f1), str(f2), str(f3)
        return lambda t: (t[i1][n1], t[i2][n2], t[i3][n3])
    getters = [_token_getter(i, fld) for i, fld in spec]
    return lambda t: tuple([g(t) for g in getters])


def _token_getter(i: int, fld: str | None) -> Callable[[Token], Any]:
    if fld is None:
        return operator.itemgetter(i)
    return lambda t: t[i][fld]


def value_getter(loc: Loc, n: int) -> Callable[[Token, Fact], Any]:
    """Read a variable from (token, new fact) where the new fact would sit at index ``n``."""
    i, fld = loc
    if fld is None:
        return (lambda t, f: f) if i == n else (lambda t, f: t[i])
    name: str = fld
    if i == n:
        return lambda t, f: f[name]
    return lambda t, f: t[i][name]


def safe_call(fn: Callable[..., bool]) -> Callable[..., bool]:
    # Comparing incomparable values (``3 < "x"``) is a non-match, as in a naive evaluation.
    def run(*args: Any) -> bool:
        try:
            return bool(fn(*args))
        except (TypeError, ValueError, ArithmeticError):
            return False

    return run
