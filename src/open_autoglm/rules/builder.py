"""The Python rule API: build the same :class:`~open_autoglm.rules.model.Rule` objects in code.

rb = RuleBook()

@rb.rule(P("user_login", user=V.u, risk_score=gt(0.8)), Not(P("session", user=V.u)),
         salience=10)
def block_access(ctx, u):
    ctx.emit({"blocked": u})

engine = Engine(rb.rules)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from open_autoglm.errors import ValidationError
from open_autoglm.rules.model import (
    Condition,
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

__all__ = ["P", "RuleBook", "V", "eq", "ge", "gt", "is_in", "le", "lt", "ne", "test"]


class _Vars:
    """``V.user`` is ``Var("user")``."""

    def __getattr__(self, name: str) -> Var:
        return Var(name)


V = _Vars()


def _op(op: Op) -> Callable[[Any], tuple[Op, Any]]:
    return lambda value: (op, value)


eq, ne, lt, le, gt, ge = (_op(o) for o in (Op.EQ, Op.NE, Op.LT, Op.LE, Op.GT, Op.GE))
is_in = _op(Op.IN)


def P(type_: str, bind: str | Var | None = None, **fields: Any) -> Pattern:
    """A pattern: ``P("order", V.o, total=gt(100), customer=V.c)``."""
    cons = []
    for name, spec in fields.items():
        specs = spec if isinstance(spec, list) else [spec]
        for s in specs:
            op, value = (
                s if isinstance(s, tuple) and len(s) == 2 and isinstance(s[0], Op) else (Op.EQ, s)
            )
            if isinstance(value, str) and value.startswith("?"):
                value = Var(value[1:])
            cons.append(Constraint(name, op, value))
    b = (
        bind.name
        if isinstance(bind, Var)
        else (bind[1:] if isinstance(bind, str) and bind.startswith("?") else bind)
    )
    return Pattern(type_, tuple(cons), b)


def test(fn: Callable[..., bool], *variables: Var | str) -> Test:
    """A predicate over bound variables: ``test(lambda a, b: a < b, V.a, V.b)``."""
    names = tuple(v.name if isinstance(v, Var) else v.lstrip("?") for v in variables)
    return Test(fn, names, getattr(fn, "__name__", "predicate"))


class RuleBook:
    """Collects rules defined with the :meth:`rule` decorator."""

    def __init__(self) -> None:
        self.rules: list[Rule] = []

    def rule(
        self,
        *conditions: Condition,
        name: str | None = None,
        salience: int = 0,
        group: str = "MAIN",
        no_loop: bool = False,
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Register ``fn(ctx, **bindings)`` as the action of a rule with these conditions."""
        if not conditions:
            raise ValidationError("a rule needs at least one condition")
        for c in conditions:
            if not isinstance(c, Pattern | Not | Exists | Test | Or):
                raise ValidationError(f"not a condition: {c!r}")

        def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
            def action(ctx: Any) -> Any:
                return fn(ctx, **ctx.bindings)

            self.rules.append(
                Rule(name or fn.__name__, tuple(conditions), (action,), salience, group, no_loop,
                     fn.__doc__ or "")
            )  # fmt: skip
            return fn

        return wrap
