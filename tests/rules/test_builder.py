"""The Python builder: decorated actions receive their bindings."""

from __future__ import annotations

from open_autoglm.rules.builder import P, RuleBook, V, gt
from open_autoglm.rules.engine import Engine


def test_builder_decorator_passes_bindings() -> None:
    rb = RuleBook()

    @rb.rule(P("order", "?o", total=gt(100), customer=V.c))
    def big(ctx, o, c):
        ctx.emit({"customer": c, "order": o.id})

    e = Engine(rb.rules)
    e.assert_fact("order", total=50, customer="a")
    f = e.assert_fact("order", total=150, customer="b")
    e.run()
    assert e.emitted == [{"rule": "big", "customer": "b", "order": f.id}]
