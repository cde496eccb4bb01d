"""Facts: typed records with a stable id, and the duplicate-fact policy."""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["DuplicatePolicy", "Fact", "content_key", "freeze"]


class DuplicatePolicy(enum.StrEnum):
    """What asserting a fact identical (same type, same fields) to a live one does.

    ``RETURN_EXISTING`` is CLIPS's default (fact-duplication off): the live fact is returned and
    nothing propagates. ``ALLOW`` keeps both, ``ERROR`` refuses the second one.
    """

    RETURN_EXISTING = "return_existing"
    ALLOW = "allow"
    ERROR = "error"


def freeze(value: Any) -> Any:
    """Return ``value`` with lists turned into tuples so it can be hashed and indexed."""
    if isinstance(value, list | tuple):
        return tuple(freeze(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((str(k), freeze(v)) for k, v in value.items()))
    return value


class Fact(dict[str, Any]):
    """A typed record: a ``dict`` of fields plus ``type``, a stable ``id`` and a recency ``tag``.

    Subclassing ``dict`` keeps field access (``fact["x"]``) at C speed in the join hot loops.
    Identity is the fact object: equality and hash are by identity so tokens (tuples of facts)
    hash cheaply. Never mutate a fact in place; use ``Engine.modify``.
    """

    __slots__ = ("id", "tag", "type")
    __hash__ = object.__hash__  # type: ignore[assignment]
    __eq__ = object.__eq__
    __ne__ = object.__ne__

    def __init__(self, type: str, data: Mapping[str, Any], id: int = 0, tag: int = 0) -> None:
        super().__init__(data)
        self.type = type
        self.id = id
        self.tag = tag

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-friendly view: ``{"id", "type", "fields"}``."""
        return {"id": self.id, "type": self.type, "fields": _thaw(dict(self))}

    def __repr__(self) -> str:
        fields = " ".join(f"{k}={v!r}" for k, v in self.items())
        return f"<f-{self.id} {self.type} {fields}>"

    def __reduce__(self) -> Any:
        return (Fact, (self.type, dict(self), self.id, self.tag))

    def fields(self) -> Iterator[tuple[str, Any]]:
        return iter(self.items())


def content_key(type: str, data: Mapping[str, Any]) -> tuple[Any, ...]:
    """Return a hashable key equal for two facts with the same type and fields."""
    return (type, tuple(sorted((k, freeze(v)) for k, v in data.items())))


def _thaw(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    if isinstance(value, dict):
        return {k: _thaw(v) for k, v in value.items()}
    return value
