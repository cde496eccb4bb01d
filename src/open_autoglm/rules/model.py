"""The rule model every front end compiles to: patterns, conditions, rules.

Both the YAML/JSON loader (``dsl.py``) and the Python builder (``builder.py``) produce these
frozen objects; the network (``network.py``) compiles them into Rete nodes.
"""

from __future__ import annotations

import enum
import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "OPS",
    "Action",
    "Condition",
    "Constraint",
    "Exists",
    "Not",
    "Op",
    "Or",
    "Pattern",
    "Rule",
    "Test",
    "Var",
    "expand_or",
    "pattern_variables",
]


class Op(enum.StrEnum):
    EQ = "=="
    NE = "!="
    LT = "<"
    LE = "<="
    GT = ">"
    GE = ">="
    IN = "in"
    NOT_IN = "not_in"


def _in(a: Any, b: Any) -> bool:
    return a in b


def _not_in(a: Any, b: Any) -> bool:
    return a not in b


OPS: dict[Op, Callable[[Any, Any], bool]] = {
    Op.EQ: operator.eq,
    Op.NE: operator.ne,
    Op.LT: operator.lt,
    Op.LE: operator.le,
    Op.GT: operator.gt,
    Op.GE: operator.ge,
    Op.IN: _in,
    Op.NOT_IN: _not_in,
}


@dataclass(frozen=True)
class Var:
    """A variable such as ``?user``; ``name`` excludes the ``?``."""

    name: str

    def __str__(self) -> str:
        return f"?{self.name}"


@dataclass(frozen=True)
class Constraint:
    """``fact[field] <op> value`` where value is a constant or a :class:`Var`.

    ``field == ?v`` with ``?v`` not yet bound binds ``?v``; later uses compare against it.
    """

    field: str
    op: Op
    value: Any


@dataclass(frozen=True)
class Pattern:
    """Match one fact of ``type`` satisfying every constraint; ``bind`` names the fact (``?f <-``)."""

    type: str
    constraints: tuple[Constraint, ...] = ()
    bind: str | None = None


@dataclass(frozen=True)
class Not:
    """No fact matches ``pattern`` (given the bindings so far)."""

    pattern: Pattern


@dataclass(frozen=True)
class Exists:
    """At least one fact matches ``pattern``; binds nothing and fires once however many match."""

    pattern: Pattern


@dataclass(frozen=True)
class Test:
    """A predicate over bound variables: ``fn(*values_of(variables)) -> bool``."""

    __test__ = False  # not a pytest test class

    fn: Callable[..., bool]
    variables: tuple[str, ...]
    source: str = ""


@dataclass(frozen=True)
class Or:
    """Any of several alternative condition sequences; compiled to one rule per alternative."""

    alternatives: tuple[tuple[Condition, ...], ...]


Condition = Pattern | Not | Exists | Test | Or

# An action receives the firing context (see ``engine.ActionContext``).
Action = Callable[[Any], Any]


@dataclass(frozen=True)
class Rule:
    """A named rule: conditions (LHS), actions (RHS) and agenda properties."""

    name: str
    conditions: tuple[Condition, ...]
    actions: tuple[Action, ...] = ()
    salience: int = 0
    group: str = "MAIN"
    no_loop: bool = False
    description: str = ""
    # JSON-friendly description of the actions, for tracing and the CLI.
    action_specs: tuple[Any, ...] = field(default=(), compare=False)

    @property
    def specificity(self) -> int:
        """Number of tests in the LHS (CLIPS uses it to break LEX/MEA ties)."""
        n = 0
        for c in self.conditions:
            if isinstance(c, Pattern):
                n += len(c.constraints)
            elif isinstance(c, Not | Exists):
                n += len(c.pattern.constraints)
            elif isinstance(c, Test):
                n += 1
        return n


def pattern_variables(pattern: Pattern) -> list[str]:
    """Variables a pattern mentions, in order (binding and referenced)."""
    out = [pattern.bind] if pattern.bind else []
    out += [c.value.name for c in pattern.constraints if isinstance(c.value, Var)]
    return out


def expand_or(conditions: tuple[Condition, ...]) -> list[tuple[Condition, ...]]:
    """Return the disjunctive normal form: one flat condition sequence per alternative."""
    variants: list[tuple[Condition, ...]] = [()]
    for cond in conditions:
        if isinstance(cond, Or):
            alts = [v for alt in cond.alternatives for v in expand_or(alt)]
            variants = [prefix + alt for prefix in variants for alt in alts]
        else:
            variants = [(*prefix, cond) for prefix in variants]
    return variants
