"""Safe expressions over rule variables (``?age >= 18 and ?country in ['FR', 'DE']``).

Parsed with :mod:`ast` and interpreted through a whitelist of node types: no names other than
variables, no calls -- ruleset files are untrusted input and never reach eval. Nested fields
are read with ``?p.max_tokens`` or ``?p["max_tokens"]`` (a key of a mapping, frozen or not)
and ``?xs[0]`` (an index); these are data lookups, never Python attribute access, at most
:data:`MAX_ACCESS_DEPTH` deep. A key that is not there reads as ``null``. The source length,
the tree's nesting and the strings and lists that ``+`` and ``*`` build are bounded
(``settings.limits``), so ``'a' * 400000000`` is refused before anything is allocated; ``%``
is arithmetic only (string formatting could pad to any width).
"""

from __future__ import annotations

import ast
import operator
import re
from collections.abc import Callable, Mapping
from typing import Any

from open_autoglm.errors import ValidationError
from open_autoglm.spec.limits import DEFAULT_LIMITS, InputLimits

__all__ = ["MAX_ACCESS_DEPTH", "compile_expression", "lookup"]

MAX_ACCESS_DEPTH = 8

_VAR = re.compile(r"\?([A-Za-z_][A-Za-z0-9_]*)")
_PREFIX = "__v_"
_MAX_HEIGHT = 64  # nesting of the expression tree (evaluation recurses over it)
_SEQUENCES = (str, list, tuple)
_BIN: dict[type, Callable[[Any, Any], Any]] = {
    ast.Sub: operator.sub,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
}
_CMP: dict[type, Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
}

Env = dict[str, Any]


def compile_expression(
    source: str, limits: InputLimits = DEFAULT_LIMITS
) -> tuple[Callable[..., Any], tuple[str, ...]]:
    """Compile ``source``; return ``(fn, variables)`` where ``fn(*values)`` evaluates it.

    Raises:
        ValidationError: a syntax error, a construct that is not allowed, a source past
            ``limits.max_expression_chars``, or a constant expression that builds a value past
            ``limits.max_value_items``.
    """
    if len(source) > limits.max_expression_chars:
        raise ValidationError(
            f"expression longer than {limits.max_expression_chars} characters "
            f"({len(source)}); split the test"
        )
    variables = tuple(dict.fromkeys(_VAR.findall(source)))
    try:
        tree = ast.parse(_VAR.sub(lambda m: _PREFIX + m.group(1), source), mode="eval")
        node = _Builder(limits.max_value_items).build(tree.body, 1)
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError | MemoryError) else exc
        raise ValidationError(f"invalid expression {_clip(source)!r}: {reason}") from None

    def fn(*values: Any) -> Any:
        return node(dict(zip(variables, values, strict=True)))

    if not variables:  # a constant: anything it would build past the limits is refused now
        try:
            fn()
        except ValidationError:
            raise
        except Exception:  # a type error shows when the rule runs, as it would have
            pass
    return fn, variables


def lookup(value: Any, key: Any) -> Any:
    """``value[key]`` for data: a mapping, a frozen mapping (pairs) or a sequence; else None."""
    if isinstance(value, Mapping):
        return value.get(key)
    if isinstance(value, tuple | list):
        if isinstance(key, int) and not isinstance(key, bool):
            return value[key] if -len(value) <= key < len(value) else None
        if isinstance(key, str):  # a frozen mapping: sorted (key, value) pairs
            for pair in value:
                if isinstance(pair, tuple) and len(pair) == 2 and pair[0] == key:
                    return pair[1]
    return None


def _depth(n: ast.AST) -> int:
    depth = 0
    while isinstance(n, ast.Attribute | ast.Subscript):
        depth += 1
        n = n.value
    return depth


def _clip(source: str) -> str:
    return source if len(source) <= 80 else source[:77] + "..."


def _too_big(what: str, size: int, cap: int) -> ValidationError:
    msg = f"the expression builds a {what} of {size} items; at most {cap}"
    return ValidationError(msg, details=[{"loc": ["test"], "msg": msg}])


def _bounded(cap: int) -> dict[type, Callable[[Any, Any], Any]]:
    """``+``, ``*`` and ``%`` that check the size of what they build before building it."""

    def add(a: Any, b: Any) -> Any:
        if isinstance(a, _SEQUENCES) and isinstance(b, _SEQUENCES) and len(a) + len(b) > cap:
            raise _too_big(type(a).__name__, len(a) + len(b), cap)
        return a + b

    def mul(a: Any, b: Any) -> Any:
        seq, n = (a, b) if isinstance(a, _SEQUENCES) else (b, a)
        if isinstance(seq, _SEQUENCES) and isinstance(n, int) and len(seq) * max(n, 0) > cap:
            raise _too_big(type(seq).__name__, len(seq) * n, cap)
        return a * b

    def mod(a: Any, b: Any) -> Any:
        if isinstance(a, str | bytes):
            raise ValidationError("'%' is arithmetic in rule expressions, not string formatting")
        return a % b

    return {ast.Add: add, ast.Mult: mul, ast.Mod: mod}


class _Builder:
    """Turns an ast into closures; ``cap`` bounds the strings and lists they build."""

    def __init__(self, cap: int) -> None:
        self.ops = {**_BIN, **_bounded(cap)}

    def build(self, n: ast.AST, height: int) -> Callable[[Env], Any]:
        if height > _MAX_HEIGHT:
            raise ValueError(f"nested deeper than {_MAX_HEIGHT}")
        return self._build(n, height + 1)

    def _build(self, n: ast.AST, h: int) -> Callable[[Env], Any]:
        if isinstance(n, ast.Attribute | ast.Subscript):
            if _depth(n) > MAX_ACCESS_DEPTH:
                raise ValueError(f"field access deeper than {MAX_ACCESS_DEPTH} levels")
            base = self.build(n.value, h)
            if isinstance(n, ast.Attribute):
                if n.attr.startswith("_"):
                    raise ValueError(f"field {n.attr!r} starts with '_'")
                name = n.attr
                return lambda env: lookup(base(env), name)
            if isinstance(n.slice, ast.Slice):
                raise ValueError("slices are not allowed in rule expressions")
            key = self.build(n.slice, h)
            return lambda env: lookup(base(env), key(env))
        if isinstance(n, ast.Constant):
            v = n.value
            return lambda env: v
        if isinstance(n, ast.Name):
            if not n.id.startswith(_PREFIX):
                if n.id in ("true", "false", "null"):
                    v = {"true": True, "false": False, "null": None}[n.id]
                    return lambda env: v
                raise ValueError(f"unknown name {n.id!r} (variables start with ?)")
            name = n.id[len(_PREFIX) :]
            return lambda env: env[name]
        if isinstance(n, ast.List | ast.Tuple):
            items = [self.build(e, h) for e in n.elts]
            return lambda env: tuple(i(env) for i in items)
        if isinstance(n, ast.BoolOp):
            parts = [self.build(v, h) for v in n.values]
            if isinstance(n.op, ast.And):
                return lambda env: all(p(env) for p in parts)
            return lambda env: any(p(env) for p in parts)
        if isinstance(n, ast.UnaryOp):
            inner = self.build(n.operand, h)
            if isinstance(n.op, ast.Not):
                return lambda env: not inner(env)
            if isinstance(n.op, ast.USub):
                return lambda env: -inner(env)
            if isinstance(n.op, ast.UAdd):
                return inner
        if isinstance(n, ast.BinOp) and type(n.op) in self.ops:
            fn = self.ops[type(n.op)]
            left, right = self.build(n.left, h), self.build(n.right, h)
            return lambda env: fn(left(env), right(env))
        if isinstance(n, ast.Compare) and all(type(o) in _CMP for o in n.ops):
            first = self.build(n.left, h)
            rest = [
                (_CMP[type(o)], self.build(c, h)) for o, c in zip(n.ops, n.comparators, strict=True)
            ]

            def compare(env: Env) -> bool:
                a = first(env)
                for fn2, c in rest:
                    b = c(env)
                    if not fn2(a, b):
                        return False
                    a = b
                return True

            return compare
        raise ValueError(f"{type(n).__name__} is not allowed in rule expressions")
