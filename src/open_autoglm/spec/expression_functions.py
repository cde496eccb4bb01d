"""The pure functions the workflow expression language may call, and JSON type helpers.

Each function takes and returns JSON data and raises ``TypeError`` on a wrong argument type;
the evaluator turns that into an ``ExpressionError`` with the call's position. Adding a
function is one entry in :data:`FUNCTIONS`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

__all__ = ["FUNCTIONS", "is_number", "type_name"]


def is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def type_name(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if is_number(v):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "list"
    if isinstance(v, dict):
        return "object"
    return type(v).__name__


def _fn_len(v: Any) -> int:
    if not isinstance(v, str | list | dict):
        raise TypeError(f"len() needs a string, list or object, not {type_name(v)}")
    return len(v)


def _str_fn(name: str, f: Callable[..., Any]) -> Callable[..., Any]:
    def call(v: Any, *rest: Any) -> Any:
        if not isinstance(v, str) or not all(isinstance(r, str) for r in rest):
            raise TypeError(f"{name}() needs strings")
        return f(v, *rest)

    return call


def _fn_minmax(name: str, pick: Callable[..., Any]) -> Callable[..., Any]:
    def call(*args: Any) -> Any:
        items = args[0] if len(args) == 1 and isinstance(args[0], list) else list(args)
        if not items:
            raise TypeError(f"{name}() of an empty list")
        if not (all(is_number(x) for x in items) or all(isinstance(x, str) for x in items)):
            raise TypeError(f"{name}() needs all numbers or all strings")
        return pick(items)

    return call


def _fn_num(name: str, f: Callable[..., Any]) -> Callable[..., Any]:
    def call(*args: Any) -> Any:
        if not all(is_number(a) for a in args):
            raise TypeError(f"{name}() needs numbers")
        return f(*args)

    return call


def _fn_convert(name: str, f: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def call(v: Any) -> Any:
        if not (is_number(v) or isinstance(v, str | bool)):
            raise TypeError(f"{name}() cannot convert {type_name(v)}")
        try:
            return f(v)
        except (ValueError, OverflowError) as exc:
            raise TypeError(f"{name}() cannot convert {v!r}") from exc

    return call


def _fn_str(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str | int | float):
        return str(v)
    raise TypeError(f"str() cannot convert {type_name(v)}")


def _fn_contains(container: Any, item: Any) -> bool:
    if isinstance(container, str):
        if not isinstance(item, str):
            raise TypeError("contains() on a string needs a string")
        return item in container
    if isinstance(container, list | dict):
        return item in container
    raise TypeError(f"contains() needs a string, list or object, not {type_name(container)}")


# name -> (implementation, min args, max args)
FUNCTIONS: Final[Mapping[str, tuple[Callable[..., Any], int, int]]] = {
    "len": (_fn_len, 1, 1),
    "lower": (_str_fn("lower", str.lower), 1, 1),
    "upper": (_str_fn("upper", str.upper), 1, 1),
    "startswith": (_str_fn("startswith", str.startswith), 2, 2),
    "endswith": (_str_fn("endswith", str.endswith), 2, 2),
    "min": (_fn_minmax("min", min), 1, 64),
    "max": (_fn_minmax("max", max), 1, 64),
    "abs": (_fn_num("abs", abs), 1, 1),
    "round": (_fn_num("round", round), 1, 2),
    "str": (_fn_str, 1, 1),
    "int": (_fn_convert("int", int), 1, 1),
    "float": (_fn_convert("float", float), 1, 1),
    "contains": (_fn_contains, 2, 2),
}
