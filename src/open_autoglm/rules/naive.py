"""A naive matcher: evaluates a rule over all facts from scratch, with no network.

It is the reference the Rete network is checked against in the property tests, and it powers
``Engine.explain``: walking the conditions in order shows the first one nothing gets past.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from open_autoglm.rules.facts import Fact
from open_autoglm.rules.model import OPS, Exists, Not, Pattern, Rule, Test, Var, expand_or

__all__ = ["describe_condition", "explain", "naive_matches"]

Partial = tuple[dict[str, Any], tuple[Fact, ...]]


def _match(p: Pattern, f: Fact, b: dict[str, Any]) -> dict[str, Any] | None:
    if f.type != p.type:
        return None
    out = dict(b)
    for c in p.constraints:
        if c.field not in f:
            return None
        val = f[c.field]
        if isinstance(c.value, Var):
            name = c.value.name
            if name not in out:
                out[name] = val  # first (equality) occurrence binds
                continue
            other = out[name]
        else:
            other = c.value
        try:
            if not OPS[c.op](val, other):
                return None
        except (TypeError, ValueError, ArithmeticError):
            return None
    if p.bind:
        out[p.bind] = f
    return out


def _step(cond: Any, partials: list[Partial], facts: Sequence[Fact]) -> list[Partial]:
    if isinstance(cond, Pattern):
        return [
            (b2, (*tok, f))
            for b, tok in partials
            for f in facts
            if (b2 := _match(cond, f, b)) is not None
        ]
    if isinstance(cond, Not | Exists):
        want = isinstance(cond, Exists)
        return [
            (b, tok)
            for b, tok in partials
            if any(_match(cond.pattern, f, b) is not None for f in facts) is want
        ]
    if isinstance(cond, Test):
        out = []
        for b, tok in partials:
            try:
                ok = bool(cond.fn(*[b[v] for v in cond.variables]))
            except (TypeError, ValueError, ArithmeticError):
                ok = False
            if ok:
                out.append((b, tok))
        return out
    raise TypeError(f"unexpected condition {cond!r}")


def naive_matches(rule: Rule, facts: Sequence[Fact]) -> set[tuple[str, int, tuple[int, ...]]]:
    """Every match of ``rule`` as ``(rule, variant, fact ids of the positive patterns)``."""
    out = set()
    for variant, conditions in enumerate(expand_or(rule.conditions)):
        partials: list[Partial] = [({}, ())]
        for cond in conditions:
            partials = _step(cond, partials, facts)
        out |= {(rule.name, variant, tuple(f.id for f in tok)) for _, tok in partials}
    return out


def describe_condition(cond: Any) -> str:
    """Render a condition in the rule language's shorthand, for messages."""
    if isinstance(cond, Pattern):
        parts = []
        for c in cond.constraints:
            v = f"?{c.value.name}" if isinstance(c.value, Var) else repr(c.value)
            parts.append(f"{c.field} {c.op.value} {v}")
        head = f"?{cond.bind} <- " if cond.bind else ""
        return f"{head}{cond.type}({', '.join(parts)})"
    if isinstance(cond, Not):
        return f"not {describe_condition(cond.pattern)}"
    if isinstance(cond, Exists):
        return f"exists {describe_condition(cond.pattern)}"
    if isinstance(cond, Test):
        return f"test {cond.source or getattr(cond.fn, '__name__', 'predicate')}"
    return repr(cond)


def explain(rule: Rule, facts: Sequence[Fact]) -> dict[str, Any]:
    """Report, per ``or`` alternative, the first condition that leaves no partial match."""
    variants = []
    matched = 0
    for variant, conditions in enumerate(expand_or(rule.conditions)):
        partials: list[Partial] = [({}, ())]
        failed = None
        for i, cond in enumerate(conditions):
            before = len(partials)
            partials = _step(cond, partials, facts)
            if not partials:
                failed = {
                    "index": i,
                    "condition": describe_condition(cond),
                    "partial_matches_before": before,
                }
                break
        matched += len(partials)
        variants.append({"variant": variant, "matches": len(partials), "first_failing": failed})
    return {"rule": rule.name, "matched": matched > 0, "matches": matched, "variants": variants}
