"""Deterministic JSON schemas for structured-output tests: nested objects, enums, arrays,
required and optional fields, built from a seeded generator."""

from __future__ import annotations

import random
from typing import Any

__all__ = ["json_schemas"]

_WORDS = ["name", "city", "kind", "size", "color", "owner", "label", "score", "count", "tag"]
_ENUMS = [["red", "green", "blue"], ["small", "large"], ["yes", "no", "maybe"], ["cat", "dog"]]


def _leaf(rng: random.Random) -> dict[str, Any]:
    kind = rng.choice(["string", "integer", "boolean", "enum", "number"])
    if kind == "string":
        return {"type": "string", "maxLength": rng.randint(3, 12)}
    if kind == "enum":
        return {"type": "string", "enum": rng.choice(_ENUMS)}
    return {"type": kind}


def _object(rng: random.Random, depth: int) -> dict[str, Any]:
    names = rng.sample(_WORDS, rng.randint(1, 4))
    properties: dict[str, Any] = {}
    for name in names:
        roll = rng.random()
        if depth > 0 and roll < 0.3:
            properties[name] = _object(rng, depth - 1)
        elif roll < 0.55:
            item = _object(rng, 0) if depth > 0 and rng.random() < 0.4 else _leaf(rng)
            properties[name] = {
                "type": "array",
                "items": item,
                "minItems": rng.randint(0, 1),
                "maxItems": rng.randint(1, 3),
            }
        else:
            properties[name] = _leaf(rng)
    required = [n for n in names if rng.random() < 0.7] or names[:1]
    return {"type": "object", "properties": properties, "required": required}


def json_schemas(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` object schemas, the same ones for the same seed."""
    rng = random.Random(seed)
    return [_object(rng, depth=rng.randint(0, 2)) for _ in range(n)]
