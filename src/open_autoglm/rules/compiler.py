"""Compile rules into the Rete network and route facts through the alpha dispatch.

Each rule (after ``or`` is expanded into alternatives) becomes a chain of nodes; a node equal to
one already built under the same parent (same alpha memory, same join tests, same positions) is
reused, so rules with a common prefix share their joins and memories.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Hashable, Iterable
from typing import Any

from open_autoglm.errors import ValidationError
from open_autoglm.rules.facts import Fact
from open_autoglm.rules.model import (
    OPS,
    Exists,
    Not,
    Op,
    Pattern,
    Rule,
    Test,
    Var,
    expand_or,
    pattern_variables,
)
from open_autoglm.rules.network import (
    AlphaMemory,
    BetaMemory,
    JoinNode,
    JoinTest,
    Loc,
    NegativeNode,
    Producer,
    TerminalNode,
    TerminalSink,
    TestNode,
    Token,
    safe_call,
    value_getter,
)

__all__ = ["Network"]

AlphaTest = Callable[[Fact], bool]


class _DispatchGroup:
    """Alpha memories of one fact type whose patterns test the same fields for equality."""

    __slots__ = ("fields", "key", "table")

    def __init__(self, fields: tuple[str, ...]) -> None:
        self.fields = fields
        self.key: Callable[[Fact], Any] | None = operator.itemgetter(*fields) if fields else None
        # equality values -> [(remaining alpha test or None, memory)]
        self.table: dict[Any, list[tuple[AlphaTest | None, AlphaMemory]]] = {}


class Network:
    """The whole Rete: alpha dispatch, shared alpha memories, the beta network, terminals."""

    def __init__(self, sink: TerminalSink, facts_of_type: Callable[[str], Iterable[Fact]]) -> None:
        self.sink = sink
        self._facts_of_type = facts_of_type
        self.root = BetaMemory()
        self.root.tokens[()] = None
        self._dispatch: dict[str, list[_DispatchGroup]] = {}
        self._alpha: dict[Hashable, AlphaMemory] = {}
        self.terminals: list[TerminalNode] = []

    # -- facts ---------------------------------------------------------------------------

    def _memories_of(self, f: Fact) -> list[AlphaMemory]:
        out: list[AlphaMemory] = []
        for group in self._dispatch.get(f.type, ()):
            try:
                entries = group.table.get(group.key(f) if group.key is not None else ())
            except (KeyError, TypeError):  # missing field, or an unhashable value
                continue
            if entries:
                for test, am in entries:
                    if test is None or test(f):
                        out.append(am)
        return out

    def assert_fact(self, f: Fact) -> None:
        for am in self._memories_of(f):
            am.add(f)

    def retract_fact(self, f: Fact) -> None:
        for am in self._memories_of(f):
            am.remove(f)

    # -- rules ---------------------------------------------------------------------------

    def add_rule(self, rule: Rule) -> list[TerminalNode]:
        """Compile ``rule`` (one chain per ``or`` alternative); return its terminal nodes."""
        out = []
        for variant, conditions in enumerate(expand_or(rule.conditions)):
            terminal = self._add_chain(rule, variant, conditions)
            self.terminals.append(terminal)
            out.append(terminal)
        return out

    def _add_chain(self, rule: Rule, variant: int, conditions: tuple[Any, ...]) -> TerminalNode:
        conditions, order = _control_patterns_last(conditions)
        node: Producer = self.root
        locs: dict[str, Loc] = {}
        n = 0  # token length so far
        i = 0
        while i < len(conditions):
            cond = conditions[i]
            i += 1
            if isinstance(cond, Pattern):
                local, am, left_spec, right_fields, checks, key = self._pattern(rule, cond, locs, n)
                new_locs = dict(locs)
                new_locs.update({name: (n, fld) for name, fld in local.items()})
                # Tests right after a pattern ride on its join: fewer tokens, no extra node.
                while i < len(conditions) and isinstance(conditions[i], Test):
                    test = conditions[i]
                    if not all(v in new_locs for v in test.variables):
                        break
                    checks.append(_test_check(test, new_locs, n))
                    key += (("test", id(test.fn), tuple(new_locs[v] for v in test.variables)),)
                    i += 1
                left = node.memory()
                share = ("join", id(am), left_spec, right_fields, key)
                join = left.shared.get(share)
                if join is None:
                    join = JoinNode(left, am, left_spec, right_fields, _all(checks))
                    left.shared[share] = join
                    left.children.append(join)
                    am.successors.insert(0, join)
                node = join
                locs = new_locs
                n += 1
            elif isinstance(cond, Not | Exists):
                _, am, left_spec, right_fields, checks, key = self._pattern(
                    rule, cond.pattern, locs, n
                )
                exists = isinstance(cond, Exists)
                left = node.memory()
                share = ("exists" if exists else "not", id(am), left_spec, right_fields, key)
                neg = left.shared.get(share)
                if neg is None:
                    neg = NegativeNode(left, am, left_spec, right_fields, _all(checks), exists)
                    left.shared[share] = neg
                    left.children.append(neg)
                    am.successors.insert(0, neg)
                node = neg
            elif isinstance(cond, Test):
                missing = [v for v in cond.variables if v not in locs]
                if missing:
                    raise ValidationError(
                        f"rule {rule.name!r}: test uses unbound variable(s) "
                        + ", ".join("?" + v for v in missing),
                        details=[{"loc": ["rules", rule.name], "msg": "unbound variable"}],
                    )
                check = _test_check(cond, locs, n)
                tshare = ("test", id(cond.fn), tuple(locs[v] for v in cond.variables))
                tnode = node.shared.get(tshare)
                if tnode is None:
                    tnode = TestNode(node, lambda t, c=check: c(t, None))  # type: ignore[misc]
                    node.shared[tshare] = tnode
                    node.children.append(tnode)
                node = tnode
            else:
                raise ValidationError(f"rule {rule.name!r}: unsupported condition {cond!r}")
        terminal = TerminalNode(rule, variant, locs, self.sink, order)
        node.children.append(terminal)
        node.replay(terminal)
        return terminal

    def _pattern(
        self, rule: Rule, p: Pattern, locs: dict[str, Loc], n: int
    ) -> tuple[
        dict[str, str],
        AlphaMemory,
        tuple[Loc, ...],
        tuple[str, ...],
        list[JoinTest],
        tuple[Any, ...],
    ]:
        """Split a pattern's constraints into alpha tests, join keys and join tests."""
        local: dict[str, str] = {}
        eq: list[tuple[str, Any]] = []
        alpha: list[tuple[str, Op, Any, bool]] = []  # (field, op, const-or-field, is_field)
        left_spec: list[Loc] = []
        right_fields: list[str] = []
        checks: list[JoinTest] = []
        key: tuple[Any, ...] = ()
        fields: set[str] = set()
        for c in p.constraints:
            fields.add(c.field)
            v = c.value
            if isinstance(v, Var):
                if v.name in locs:
                    if c.op is Op.EQ:
                        left_spec.append(locs[v.name])
                        right_fields.append(c.field)
                    else:
                        checks.append(_compare(c.field, c.op, value_getter(locs[v.name], n)))
                        key += ((c.field, c.op.value, locs[v.name]),)
                elif v.name in local:
                    alpha.append((c.field, c.op, local[v.name], True))
                elif c.op is Op.EQ:
                    local[v.name] = c.field
                else:
                    raise ValidationError(
                        f"rule {rule.name!r}: ?{v.name} is used with {c.op.value} before it is bound",
                        details=[
                            {
                                "loc": ["rules", rule.name, p.type, c.field],
                                "msg": "unbound variable",
                            }
                        ],
                    )
            elif c.op is Op.EQ and isinstance(v, Hashable):
                eq.append((c.field, v))
            else:
                alpha.append((c.field, c.op, v, False))
        if p.bind:
            if p.bind in locs or p.bind in local:
                raise ValidationError(f"rule {rule.name!r}: ?{p.bind} is bound twice")
            local[p.bind] = None  # type: ignore[assignment]
        am = self._alpha_memory(p.type, eq, alpha, fields)
        return local, am, tuple(left_spec), tuple(right_fields), checks, key

    def _alpha_memory(
        self,
        type_: str,
        eq: list[tuple[str, Any]],
        alpha: list[tuple[str, Op, Any, bool]],
        fields: set[str],
    ) -> AlphaMemory:
        eq.sort(key=lambda e: e[0])
        eq_fields = tuple(f for f, _ in eq)
        rest = tuple(sorted((f, op.value, repr(v), isf) for f, op, v, isf in alpha))
        other = tuple(sorted(fields - set(eq_fields)))
        share = (type_, tuple((f, repr(v)) for f, v in eq), rest, other)
        am = self._alpha.get(share)
        if am is not None:
            return am
        am = self._alpha[share] = AlphaMemory()
        test = _alpha_test(alpha, other)
        groups = self._dispatch.setdefault(type_, [])
        group = next((g for g in groups if g.fields == eq_fields), None)
        if group is None:
            group = _DispatchGroup(eq_fields)
            groups.append(group)
        values = tuple(v for _, v in eq)
        dkey = values[0] if len(values) == 1 else values
        group.table.setdefault(dkey, []).append((test, am))
        for f in self._facts_of_type(type_):
            try:
                ok = all(f[k] == v for k, v in eq) and (test is None or test(f))
            except KeyError:
                ok = False
            if ok:
                am.facts[f] = None
        return am


def _variables(cond: Any) -> set[str]:
    if isinstance(cond, Pattern):
        return set(pattern_variables(cond))
    if isinstance(cond, Not | Exists):
        return set(pattern_variables(cond.pattern))
    if isinstance(cond, Test):
        return set(cond.variables)
    return set()


def _control_patterns_last(
    conditions: tuple[Any, ...],
) -> tuple[tuple[Any, ...], tuple[int, ...] | None]:
    """Move positive patterns that share no variable with any other condition to the end.

    Such patterns (a ``context`` or ``count`` fact) only form a cross product with the rest, and
    they are the facts that change most often; joined last, a change to one re-joins only the
    final step instead of discarding and rebuilding every partial match below it. The match set
    is unchanged; ``order`` maps token positions back to the declared pattern order.
    """
    uses = [_variables(c) for c in conditions]
    control = []
    for i, c in enumerate(conditions):
        if isinstance(c, Pattern):
            others = set().union(*(u for j, u in enumerate(uses) if j != i))
            if not (uses[i] & others):
                control.append(i)
    if not control or len(control) == len(conditions):
        return conditions, None
    moved = [i for i in range(len(conditions)) if i not in control] + control
    positives = [i for i in range(len(conditions)) if isinstance(conditions[i], Pattern)]
    new_positions = [i for i in moved if isinstance(conditions[i], Pattern)]
    # order[k] = token index of the k-th declared positive pattern
    order = tuple(new_positions.index(p) for p in positives)
    if order == tuple(range(len(order))):
        return conditions, None
    return tuple(conditions[i] for i in moved), order


def _all(checks: list[JoinTest]) -> JoinTest | None:
    if not checks:
        return None
    if len(checks) == 1:
        return checks[0]
    if len(checks) == 2:
        a, b = checks
        return lambda t, f: a(t, f) and b(t, f)

    def run(t: Token, f: Fact) -> bool:
        return all(c(t, f) for c in checks)

    return run


def _compare(field: str, op: Op, other: Callable[[Token, Fact], Any]) -> JoinTest:
    fn = OPS[op]
    if op is Op.NE:
        return lambda t, f: f[field] != other(t, f)
    return safe_call(lambda t, f: fn(f[field], other(t, f)))


def _test_check(test: Test, locs: dict[str, Loc], n: int) -> JoinTest:
    getters = [value_getter(locs[v], n) for v in test.variables]
    fn = test.fn
    if len(getters) == 1:
        (g,) = getters
        return safe_call(lambda t, f: fn(g(t, f)))
    if len(getters) == 2:
        g1, g2 = getters
        return safe_call(lambda t, f: fn(g1(t, f), g2(t, f)))
    return safe_call(lambda t, f: fn(*[g(t, f) for g in getters]))


def _field_check(fld: str, fn: Callable[[Any, Any], Any], value: Any, is_field: bool) -> AlphaTest:
    if is_field:  # compare with another field of the same fact
        return lambda f: bool(fn(f[fld], f[value]))
    return lambda f: bool(fn(f[fld], value))


def _alpha_test(
    alpha: list[tuple[str, Op, Any, bool]], required: tuple[str, ...]
) -> AlphaTest | None:
    if not alpha and not required:
        return None
    checks: list[AlphaTest] = []
    for fld, op, v, is_field in alpha:
        checks.append(_field_check(fld, OPS[op], v, is_field))

    def run(f: Fact) -> bool:
        try:
            for r in required:
                if r not in f:
                    return False
            return all(c(f) for c in checks)
        except (KeyError, TypeError, ValueError):
            return False

    return run
