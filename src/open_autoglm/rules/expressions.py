"""Safe expressions over rule variables (``?age >= 18 and ?country in ['FR', 'DE']``).

Parsed with :mod:`ast` and interpreted through a whitelist of node types: no names other than
variables, no calls -- ruleset files are untrusted input and never reach eval. Nested fields
are read with ``?p.max_tokens`` or ``?p["max_tokens"]`` (a key of a mapping, frozen or not)
and ``?xs[0]`` (an index); these are data lookups, never Python attribute access, at most
:data:`MAX_ACCESS_DEPTH` deep. A key that is not there reads as ``null``.
"""

from __future__ import annotations

import ast
import operator
import re
from collections.abc import Callable, Mapping
from typing import Any

from open_autoglm.errors import ValidationError

__all__ = ["MAX_ACCESS_DEPTH", "compile_expression", "lookup"]

MAX_ACCESS_DEPTH = 8

_VAR = re.compile(r"\?([A-Za-z_][A-Za-z0-9_]*)")
_PREFIX = "__v_"
_BIN: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
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


def compile_expression(source: str) -> tuple[Callable[..., Any], tuple[str, ...]]:
    """Compile ``source``; return ``(fn, variables)`` where ``fn(*values)`` evaluates it."""
    variables = tuple(dict.fromkeys(_VAR.findall(source)))
    try:
        tree = ast.parse(_VAR.sub(lambda m: _PREFIX + m.group(1), source), mode="eval")
        node = _build(tree.body)
    except (SyntaxError, ValueError) as exc:
        raise ValidationError(f"invalid expression {source!r}: {exc}") from None

    def fn(*values: Any) -> Any:
        return node(dict(zip(variables, values, strict=True)))

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


def _build(n: ast.AST) -> Callable[[Env], Any]:
    if isinstance(n, ast.Attribute | ast.Subscript):
        if _depth(n) > MAX_ACCESS_DEPTH:
            raise ValueError(f"field access deeper than {MAX_ACCESS_DEPTH} levels")
        base = _build(n.value)
        if isinstance(n, ast.Attribute):
            if n.attr.startswith("_"):
                raise ValueError(f"field {n.attr!r} starts with '_'")
            name = n.attr
            return lambda env: lookup(base(env), name)
        if isinstance(n.slice, ast.Slice):
            raise ValueError("slices are not allowed in rule expressions")
        key = _build(n.slice)
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
        items = [_build(e) for e in n.elts]
        return lambda env: tuple(i(env) for i in items)
    if isinstance(n, ast.BoolOp):
        parts = [_build(v) for v in n.values]
        if isinstance(n.op, ast.And):
            return lambda env: all(p(env) for p in parts)
        return lambda env: any(p(env) for p in parts)
    if isinstance(n, ast.UnaryOp):
        inner = _build(n.operand)
        if isinstance(n.op, ast.Not):
            return lambda env: not inner(env)
        if isinstance(n.op, ast.USub):
            return lambda env: -inner(env)
        if isinstance(n.op, ast.UAdd):
            return inner
    if isinstance(n, ast.BinOp) and type(n.op) in _BIN:
        fn = _BIN[type(n.op)]
        left, right = _build(n.left), _build(n.right)
        return lambda env: fn(left(env), right(env))
    if isinstance(n, ast.Compare) and all(type(o) in _CMP for o in n.ops):
        first = _build(n.left)
        rest = [(_CMP[type(o)], _build(c)) for o, c in zip(n.ops, n.comparators, strict=True)]

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
