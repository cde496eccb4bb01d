"""``${...}`` references inside step fields: compile once, render against a run's context.

A string that is exactly one reference (``"${steps.embed.output}"``) renders to the raw value
(a list stays a list); a reference embedded in longer text is interpolated as text
(``"label=${steps.c.output.label}"``). ``$${`` writes a literal ``${``. The text between
``${`` and ``}`` is a full expression (see :mod:`open_autoglm.spec.expressions`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from open_autoglm.spec.expressions import Expr, ExpressionError, evaluate, parse_expression

__all__ = ["Template", "compile_value", "iter_templates", "render_value"]


@dataclass(frozen=True, slots=True)
class Template:
    """A compiled string: literal parts and expressions, in order."""

    parts: tuple[str | Expr, ...]
    source: str

    @property
    def is_single(self) -> bool:
        return len(self.parts) == 1 and not isinstance(self.parts[0], str)

    def expressions(self) -> Iterator[Expr]:
        return (p for p in self.parts if not isinstance(p, str))

    def render(self, context: Mapping[str, Any]) -> Any:
        if self.is_single:
            return evaluate(self.parts[0], context)  # type: ignore[arg-type]
        out: list[str] = []
        for part in self.parts:
            out.append(part if isinstance(part, str) else _as_text(evaluate(part, context)))
        return "".join(out)


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _end_of_reference(src: str, start: int) -> int:
    """Index of the ``}`` closing the reference whose body starts at ``start``; -1 if none."""
    quote = ""
    i = start
    while i < len(src):
        ch = src[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch == "}":
            return i
        i += 1
    return -1


def compile_string(src: str) -> str | Template:
    """Compile one string; plain strings come back unchanged (the common, cheap case)."""
    if "${" not in src:
        return src
    parts: list[str | Expr] = []
    text: list[str] = []
    i = 0
    while i < len(src):
        if src.startswith("$${", i):
            text.append("${")
            i += 3
        elif src.startswith("${", i):
            end = _end_of_reference(src, i + 2)
            if end < 0:
                raise ExpressionError("unterminated '${' reference", position=i)
            body = src[i + 2 : end]
            try:
                expr = parse_expression(body)
            except ExpressionError as exc:
                # Report the position within the whole string, not within the reference.
                offset = i + 2 + (len(body) - len(body.lstrip()))
                raise ExpressionError(exc.reason, position=max(exc.position, 0) + offset) from None
            if text:
                parts.append("".join(text))
                text = []
            parts.append(expr)
            i = end + 1
        else:
            text.append(src[i])
            i += 1
    if text:
        parts.append("".join(text))
    if not any(not isinstance(p, str) for p in parts):
        return "".join(p for p in parts if isinstance(p, str))
    return Template(tuple(parts), src)


def compile_value(value: Any) -> Any:
    """Compile every string inside JSON ``value`` (dict values, list items; keys stay literal)."""
    if isinstance(value, str):
        return compile_string(value)
    if isinstance(value, dict):
        return {k: compile_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [compile_value(v) for v in value]
    return value


def render_value(compiled: Any, context: Mapping[str, Any]) -> Any:
    """Resolve a value made by :func:`compile_value`; returns fresh JSON data."""
    if isinstance(compiled, Template):
        return compiled.render(context)
    if isinstance(compiled, dict):
        return {k: render_value(v, context) for k, v in compiled.items()}
    if isinstance(compiled, list):
        return [render_value(v, context) for v in compiled]
    return compiled


def iter_templates(
    value: Any, loc: tuple[str | int, ...] = ()
) -> Iterator[tuple[tuple[str | int, ...], str, Template | ExpressionError]]:
    """Yield ``(loc, source, template or the error compiling it)`` for each ``${`` string."""
    if isinstance(value, str):
        if "${" in value:
            try:
                compiled = compile_string(value)
            except ExpressionError as exc:
                yield loc, value, exc
            else:
                if isinstance(compiled, Template):
                    yield loc, value, compiled
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from iter_templates(v, (*loc, str(k)))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from iter_templates(v, (*loc, i))
