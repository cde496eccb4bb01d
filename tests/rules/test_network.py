"""The Rete network: joins, negation, existence, tests, disjunction and retraction."""

from __future__ import annotations

from open_autoglm.rules.builder import P, RuleBook, V
from open_autoglm.rules.builder import test as pred
from open_autoglm.rules.dsl import parse_ruleset
from open_autoglm.rules.engine import Engine
from open_autoglm.rules.model import Exists, Not, Or


def _rules(*rules: dict) -> list:
    return parse_ruleset({"rules": list(rules)})[1]


def test_join_not_exists_test_or_and_retract_cascade() -> None:
    rb = RuleBook()
    rb.rule(P("a", k=V.k), P("b", k=V.k), name="join")(lambda ctx, k: None)
    rb.rule(P("a", k=V.k), Not(P("b", k=V.k)), name="neg")(lambda ctx, k: None)
    rb.rule(P("a", k=V.k), Exists(P("b", k=V.k)), name="ex")(lambda ctx, k: None)
    rb.rule(P("a", k=V.k), pred(lambda k: k > 1, V.k), name="tst")(lambda ctx, k: None)
    rb.rule(Or(((P("a", k=1),), (P("b", k=1),))), name="either")(lambda ctx: None)
    e = Engine(rb.rules)
    a1, a2 = e.assert_fact("a", k=1), e.assert_fact("a", k=2)
    b1 = e.assert_fact("b", k=1)
    e.assert_fact("b", k=1, x=0)
    m = e.matches()
    assert {x for x in m if x[0] == "join"} == {
        ("join", 0, (a1.id, b1.id)),
        ("join", 0, (a1.id, 4)),
    }
    assert {x for x in m if x[0] == "neg"} == {("neg", 0, (a2.id,))}
    assert {x for x in m if x[0] == "ex"} == {("ex", 0, (a1.id,))}  # once despite two b's
    assert {x for x in m if x[0] == "tst"} == {("tst", 0, (a2.id,))}
    assert {x[1] for x in m if x[0] == "either"} == {0, 1}
    e.retract(b1)
    e.retract(4)
    m = e.matches()
    assert not [x for x in m if x[0] in ("join", "ex")]
    assert {x for x in m if x[0] == "neg"} == {("neg", 0, (a1.id,)), ("neg", 0, (a2.id,))}
    e.modify(a2, k=0)  # modify keeps the id and re-matches only this fact
    assert ("tst", 0, (a2.id,)) not in e.matches()
    assert e.fact(a2.id)["k"] == 0
