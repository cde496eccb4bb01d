"""Tool calls: OpenAI ``tools`` into the prompt and a grammar, the model's output back into
``tool_calls``.

A call is written as ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` (the Hermes
form many open chat templates use). Chat templates that take ``tools`` get them directly;
for the others a system message lists the tools and that form. The grammar forces the call's
JSON, ``arguments`` following the tool's parameter schema: with ``tool_choice`` ``"required"``
or a named function the output is exactly one call; with ``"auto"`` it is either one call or
plain text that does not start with ``<``; ``"none"`` leaves the tools out.
"""

from __future__ import annotations

import enum
import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from open_autoglm.errors import ValidationError
from open_autoglm.ml.text.structured import schema_rules

__all__ = [
    "CALL_CLOSE",
    "CALL_OPEN",
    "ToolChoice",
    "ToolPlan",
    "call_text",
    "parse_tool_calls",
    "plan_tools",
    "tools_system_prompt",
]

CALL_OPEN = "<tool_call>"
CALL_CLOSE = "</tool_call>"
MAX_TOOLS = 64
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class ToolChoice(enum.StrEnum):
    NONE = "none"
    AUTO = "auto"
    REQUIRED = "required"


@dataclass(frozen=True)
class ToolPlan:
    """What a request with tools decodes with: the tools shown to the model and a grammar."""

    tools: tuple[Mapping[str, Any], ...]  # OpenAI tool objects, for the chat template
    grammar: str | None


def _functions(tools: Sequence[Any]) -> list[Mapping[str, Any]]:
    if not isinstance(tools, list) or not tools or len(tools) > MAX_TOOLS:
        raise ValidationError(
            f"tools must be a list of 1 to {MAX_TOOLS} tools",
            details=[{"loc": ["tools"], "msg": "bad tools list"}],
        )
    out = []
    for i, tool in enumerate(tools):
        fn = tool.get("function") if isinstance(tool, Mapping) else None
        if (
            not isinstance(tool, Mapping)
            or tool.get("type") != "function"
            or not isinstance(fn, Mapping)
        ):
            raise ValidationError(
                "each tool must be {'type': 'function', 'function': {...}}",
                details=[{"loc": ["tools", str(i)], "msg": "not a function tool"}],
            )
        if not isinstance(fn.get("name"), str) or not _NAME.match(fn["name"]):
            raise ValidationError(
                "a function name is 1-64 letters, digits, '_' or '-'",
                details=[{"loc": ["tools", str(i), "function", "name"], "msg": "bad name"}],
            )
        out.append(fn)
    names = [fn["name"] for fn in out]
    if len(set(names)) != len(names):
        raise ValidationError(
            "tool names must be unique", details=[{"loc": ["tools"], "msg": "duplicate name"}]
        )
    return out


def _choice(tool_choice: Any, names: list[str]) -> tuple[ToolChoice, str | None]:
    if tool_choice is None:
        return ToolChoice.AUTO, None
    if isinstance(tool_choice, str):
        try:
            return ToolChoice(tool_choice), None
        except ValueError:
            pass
    elif isinstance(tool_choice, Mapping) and tool_choice.get("type") == "function":
        name = (tool_choice.get("function") or {}).get("name")
        if name in names:
            return ToolChoice.REQUIRED, name
        raise ValidationError(
            f"tool_choice names {name!r}, which is not among the tools",
            details=[{"loc": ["tool_choice", "function", "name"], "msg": "unknown tool"}],
        )
    raise ValidationError(
        "tool_choice must be 'none', 'auto', 'required' or {'type': 'function', 'function': "
        "{'name': ...}}",
        details=[{"loc": ["tool_choice"], "msg": "bad tool_choice"}],
    )


def _call_rules(functions: list[Mapping[str, Any]]) -> str:
    """GBNF rules ``call ::= ...`` for one call of any of ``functions`` (JSON, then close)."""
    alternatives = []
    for fn in functions:
        params = fn.get("parameters") or {"type": "object", "properties": {}}
        alternatives.append(
            {
                "type": "object",
                "properties": {"name": {"const": fn["name"]}, "arguments": params},
                "required": ["name", "arguments"],
                "additionalProperties": False,
            }
        )
    schema = alternatives[0] if len(alternatives) == 1 else {"anyOf": alternatives}
    rules = schema_rules(schema, loc=["tools"])
    # The converter's start rule becomes the call's JSON; the call adds the markers.
    rules = re.sub(r"^root ::=", "tc-json ::=", rules, flags=re.M)
    return f'{rules}\ntc-call ::= "{CALL_OPEN}" tc-json "{CALL_CLOSE}"'


def plan_tools(tools: Any, tool_choice: Any = None) -> ToolPlan:
    """Validate ``tools``/``tool_choice`` (400 naming the field) and build the grammar."""
    functions = _functions(tools)
    choice, only = _choice(tool_choice, [fn["name"] for fn in functions])
    if choice is ToolChoice.NONE:
        return ToolPlan(tools=(), grammar=None)
    callable_ = [fn for fn in functions if only is None or fn["name"] == only]
    rules = _call_rules(callable_)
    if choice is ToolChoice.REQUIRED:
        root = "root ::= tc-call"
    else:  # a call, or text that cannot be mistaken for one
        root = "root ::= tc-call | tc-text\ntc-text ::= [^<] [^\\x00]*"
    return ToolPlan(tools=tuple(tools), grammar=f"{root}\n{rules}")


def tools_system_prompt(tools: Sequence[Mapping[str, Any]]) -> str:
    """The system message that shows ``tools`` to a model whose template takes none."""
    listing = "\n".join(json.dumps(t.get("function", t), ensure_ascii=False) for t in tools)
    return (
        "You can call functions. The functions you may call:\n"
        f"<tools>\n{listing}\n</tools>\n"
        f"To call one, answer with {CALL_OPEN}"
        '{"name": <function name>, "arguments": <arguments object>}'
        f"{CALL_CLOSE} and nothing else."
    )


def parse_tool_calls(text: str) -> tuple[str | None, list[dict[str, Any]]]:
    """Split generated ``text`` into (content, OpenAI ``tool_calls``)."""
    calls: list[dict[str, Any]] = []
    pattern = re.compile(re.escape(CALL_OPEN) + r"(.*?)" + re.escape(CALL_CLOSE), re.S)
    for match in pattern.finditer(text):
        try:
            call = json.loads(match.group(1))
        except json.JSONDecodeError:
            continue
        if not isinstance(call, dict) or not isinstance(call.get("name"), str):
            continue
        calls.append(
            {
                "id": f"call_{uuid.uuid4().hex[:24]}",
                "type": "function",
                "function": {
                    "name": call["name"],
                    "arguments": json.dumps(call.get("arguments", {}), ensure_ascii=False),
                },
            }
        )
    if not calls:
        return text, []
    rest = pattern.sub("", text).strip()
    return (rest or None), calls


def call_text(tool_calls: Sequence[Mapping[str, Any]]) -> str:
    """An assistant message's ``tool_calls`` written back in the form the model produces."""
    parts = []
    for call in tool_calls:
        fn = call.get("function") or {}
        try:
            arguments = json.loads(fn.get("arguments") or "{}")
        except (json.JSONDecodeError, TypeError):
            arguments = fn.get("arguments")
        body = json.dumps({"name": fn.get("name"), "arguments": arguments}, ensure_ascii=False)
        parts.append(f"{CALL_OPEN}{body}{CALL_CLOSE}")
    return "".join(parts)
