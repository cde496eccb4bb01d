"""Structured outputs: a ``response_format`` becomes a GBNF grammar for constrained decoding.

``json_object`` asks for any JSON object, ``json_schema`` for a value of the given JSON schema.
The grammar comes from llama-cpp-python's JSON-schema-to-grammar converter; the schema is
checked against what that converter enforces first, so a keyword it would silently ignore
(``minimum``, ``not``, ...) is refused with a 400 naming it instead of giving output that
does not validate.
"""

from __future__ import annotations

import enum
import functools
import json
from collections.abc import Iterator, Mapping
from typing import Any

from open_autoglm.errors import ValidationError

__all__ = [
    "ResponseFormatType",
    "grammar_for_response_format",
    "schema_rules",
    "unsupported_schema_features",
]


class ResponseFormatType(enum.StrEnum):
    TEXT = "text"
    JSON_OBJECT = "json_object"
    JSON_SCHEMA = "json_schema"


# Keywords the converter turns into grammar rules.
_ENFORCED = frozenset(
    {
        "type", "properties", "required", "additionalProperties", "items", "prefixItems",
        "minItems", "maxItems", "enum", "const", "anyOf", "oneOf", "allOf", "$ref", "$defs",
        "definitions", "pattern", "format", "minLength", "maxLength",
    }
)  # fmt: skip
# Keywords that only describe (no constraint to enforce).
_ANNOTATIONS = frozenset(
    {
        "title", "description", "examples", "default", "$schema", "$id", "$comment",
        "deprecated", "readOnly", "writeOnly", "strict",
    }
)  # fmt: skip
_TYPES = frozenset({"string", "number", "integer", "boolean", "object", "array", "null"})
_FORMATS = frozenset({"date", "time", "date-time", "uuid", "uuid1", "uuid2", "uuid3", "uuid4",
                      "uuid5"})  # fmt: skip
# Keywords whose value is a map of name -> subschema, or a list of subschemas.
_SCHEMA_MAPS = ("properties", "$defs", "definitions")
_SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
MAX_SCHEMA_BYTES = 64 * 1024


def _walk(schema: Any, path: str) -> Iterator[tuple[str, str]]:
    """(path, problem) for each unsupported feature in ``schema``."""
    if isinstance(schema, bool):
        return
    if not isinstance(schema, Mapping):
        yield path, "a schema must be an object"
        return
    for key, value in schema.items():
        where = f"{path}.{key}" if path else key
        if key in _ANNOTATIONS:
            continue
        if key not in _ENFORCED:
            yield where, f"keyword {key!r} is not supported"
            continue
        if key == "type":
            types = value if isinstance(value, list) else [value]
            for t in types:
                if t not in _TYPES:
                    yield where, f"type {t!r} is not a JSON schema type"
        elif key == "format" and value not in _FORMATS:
            yield where, f"format {value!r} is not supported (one of {sorted(_FORMATS)})"
        elif key == "$ref" and not str(value).startswith("#/"):
            yield where, "only local references ('#/...') are supported"
        elif key == "allOf" and schema.get("type", "object") != "object":
            yield where, "allOf is supported on objects only"
        elif key in _SCHEMA_MAPS:
            if not isinstance(value, Mapping):
                yield where, f"{key} must be an object"
                continue
            for name, sub in value.items():
                yield from _walk(sub, f"{where}.{name}")
        elif key in _SCHEMA_LISTS:
            if not isinstance(value, list) or not value:
                yield where, f"{key} must be a non-empty list"
                continue
            for i, sub in enumerate(value):
                yield from _walk(sub, f"{where}[{i}]")
        elif key == "items":
            yield from _walk(value, where)
        elif key == "additionalProperties" and not isinstance(value, bool):
            yield from _walk(value, where)


def unsupported_schema_features(schema: Any) -> list[tuple[str, str]]:
    """Every (path, problem) that would keep ``schema`` from being enforced exactly."""
    return list(_walk(schema, ""))


def _refuse(loc: list[str], problems: list[tuple[str, str]]) -> ValidationError:
    first_path, first = problems[0]
    return ValidationError(
        f"unsupported JSON schema feature at {first_path or '<root>'}: {first}",
        details=[{"loc": [*loc, *(p.split(".") if p else [])], "msg": msg} for p, msg in problems],
    )


@functools.lru_cache(maxsize=256)
def _gbnf(schema_json: str) -> str:
    # Converted once per distinct schema: clients repeat the same one request after request.
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    return str(json_schema_to_gbnf(schema_json))


def schema_rules(schema: Any, *, loc: list[str]) -> str:
    """GBNF rules for ``schema`` whose start rule is ``root`` (400 on unsupported features)."""
    try:
        size = len(json.dumps(schema))
    except (TypeError, ValueError):
        raise ValidationError(
            "the schema is not JSON", details=[{"loc": loc, "msg": "not JSON"}]
        ) from None
    if size > MAX_SCHEMA_BYTES:
        raise ValidationError(
            f"the schema is {size} bytes; at most {MAX_SCHEMA_BYTES}",
            details=[{"loc": loc, "msg": "schema too large"}],
        )
    problems = unsupported_schema_features(schema)
    if problems:
        raise _refuse(loc, problems)
    try:
        return _gbnf(json.dumps(schema))
    except (AssertionError, ValueError, KeyError, TypeError) as exc:
        raise ValidationError(
            f"the schema cannot be turned into a grammar: {exc}",
            details=[{"loc": loc, "msg": str(exc)}],
        ) from None


def grammar_for_response_format(
    response_format: Mapping[str, Any] | None, *, loc: list[str]
) -> str | None:
    """The grammar a ``response_format`` asks for, or None for plain text."""
    if not response_format:
        return None
    try:
        kind = ResponseFormatType(str(response_format.get("type")))
    except ValueError:
        raise ValidationError(
            f"response_format.type must be one of {[t.value for t in ResponseFormatType]}",
            details=[{"loc": [*loc, "type"], "msg": "unknown response format type"}],
        ) from None
    if kind is ResponseFormatType.TEXT:
        return None
    if kind is ResponseFormatType.JSON_OBJECT:
        return schema_rules({"type": "object"}, loc=loc)
    spec = response_format.get("json_schema")
    if not isinstance(spec, Mapping) or not isinstance(spec.get("schema", {}), Mapping | bool):
        raise ValidationError(
            "response_format.json_schema must be an object with a 'schema'",
            details=[{"loc": [*loc, "json_schema"], "msg": "missing or not an object"}],
        )
    return schema_rules(spec.get("schema", {}), loc=[*loc, "json_schema", "schema"])
