"""Property: after any assert/retract/modify sequence the network's matches equal a naive
re-evaluation of every rule over all live facts."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from open_autoglm.rules.engine import Engine
from open_autoglm.rules.facts import DuplicatePolicy
from open_autoglm.rules.model import (
    Constraint,
    Exists,
    Not,
    Op,
    Or,
    Pattern,
    Rule,
    Test,
    Var,
)
from open_autoglm.rules.naive import naive_matches

TYPES = ("a", "b", "c")
FIELDS = ("x", "y")
OPS = (Op.EQ, Op.NE, Op.LT, Op.GE)


def _lt(a: object, b: object) -> bool:
    return a < b  # type: ignore[operator]


def _random_pattern(rng: random.Random, bound: list[str], fresh: bool) -> Pattern:
    constraints = []
    local: list[str] = []
    for fld in rng.sample(FIELDS, rng.randint(0, 2)):
        kind = rng.random()
        if kind < 0.35:
            constraints.append(Constraint(fld, rng.choice(OPS), rng.randint(0, 2)))
        elif kind < 0.7 and bound:
            constraints.append(Constraint(fld, rng.choice(OPS), Var(rng.choice(bound))))
        else:
            name = f"v{len(bound) + len(local)}"
            constraints.append(Constraint(fld, Op.EQ, Var(name)))
            local.append(name)
    if fresh:
        bound.extend(local)
    return Pattern(rng.choice(TYPES), tuple(constraints))


def _random_conditions(rng: random.Random, bound: list[str], depth: int = 0) -> list:
    conds: list = [_random_pattern(rng, bound, True)]
    for _ in range(rng.randint(0, 2)):
        kind = rng.random()
        if kind < 0.4:
            conds.append(_random_pattern(rng, bound, True))
        elif kind < 0.6:
            conds.append(Not(_random_pattern(rng, list(bound), False)))
        elif kind < 0.75:
            conds.append(Exists(_random_pattern(rng, list(bound), False)))
        elif kind < 0.9 and len(bound) >= 2:
            a, b = rng.sample(bound, 2)
            conds.append(Test(_lt, (a, b), f"?{a} < ?{b}"))
        elif depth == 0:
            alts = []
            for _ in range(2):
                alt_bound = list(bound)
                alts.append(tuple(_random_conditions(rng, alt_bound, 1)))
            conds.append(Or(tuple(alts)))
            break  # variables bound inside an alternative are not common to all
    return conds


def _random_rules(rng: random.Random) -> list[Rule]:
    rules = []
    for i in range(rng.randint(1, 4)):
        conds = _random_conditions(rng, [])
        rules.append(Rule(f"r{i}", tuple(conds)))
    return rules


def _check(engine: Engine, rules: list[Rule]) -> None:
    facts = engine.facts()
    expected = set().union(*(naive_matches(r, facts) for r in rules))
    assert engine.matches() == expected


@settings(max_examples=120, deadline=None)
@given(st.randoms(use_true_random=False), st.booleans())
def test_network_matches_naive_matcher(rng: random.Random, rules_first: bool) -> None:
    rules = _random_rules(rng)
    engine = Engine([] if not rules_first else rules, duplicates=DuplicatePolicy.ALLOW)
    live = []
    for step in range(25):
        if step == 6 and not rules_first:
            for r in rules:  # rules added after facts exist must see them
                engine.add_rule(r)
        op = rng.random()
        if op < 0.5 or not live:
            data = {f: rng.randint(0, 2) for f in rng.sample(FIELDS, rng.randint(1, 2))}
            live.append(engine.assert_fact(rng.choice(TYPES), data))
        elif op < 0.75:
            engine.retract(live.pop(rng.randrange(len(live))))
        else:
            f = rng.choice(live)
            engine.modify(f, {rng.choice(FIELDS): rng.randint(0, 2)})
        if rules_first or step >= 6:
            _check(engine, rules)
