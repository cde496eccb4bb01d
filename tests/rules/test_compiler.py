"""Compiling rules into the network: rules with a common prefix share its nodes."""

from __future__ import annotations

from open_autoglm.rules.builder import P, RuleBook, V
from open_autoglm.rules.dsl import parse_ruleset
from open_autoglm.rules.engine import Engine


def _rules(*rules: dict) -> list:
    return parse_ruleset({"rules": list(rules)})[1]


def test_node_sharing_between_rules_with_common_prefix() -> None:
    rb = RuleBook()
    for i in range(3):
        rb.rule(P("a", k=V.k), P("b", k=V.k), P("c", n=i), name=f"r{i}")(lambda ctx, k: None)
    e = Engine(rb.rules)
    joins = e.network.root.children
    assert len(joins) == 1  # one shared join for a(...)
    assert len(e.network._alpha) == 5  # a, b, c=0, c=1, c=2
