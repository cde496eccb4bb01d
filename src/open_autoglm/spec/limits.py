"""The shared input limits, and the JSON-tree and YAML loaders that enforce them.

One :class:`InputLimits` (``settings.limits``) bounds every document a client or a CLI verb
hands the platform (tasks, workflows, rulesets, models): its size in bytes, nesting depth,
node count and string length, the aliases a YAML document may use, and what evaluating its
expressions may cost. JSON is checked after decoding (:func:`check_tree`); YAML is checked
while it is composed and before anything is built (:func:`load_yaml`): an alias is a reference
to a node, so a few hundred bytes of nested aliases stand for billions of nodes once anything
walks the tree, and the expanded size is computed over the references, never by expanding.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

import yaml
from pydantic import BaseModel, ConfigDict, Field
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from open_autoglm.errors import ValidationError

__all__ = ["DEFAULT_LIMITS", "InputLimits", "check_tree", "load_json", "load_yaml", "read_document"]


class InputLimits(BaseModel):
    """Bounds on one input document and on evaluating what it says."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_bytes: int = Field(
        default=10 * 1024 * 1024, ge=1024, description="bytes of one YAML/JSON document"
    )
    max_depth: int = Field(default=64, ge=4, le=512, description="nesting depth of a document")
    max_nodes: int = Field(
        default=10_000_000,
        ge=100,
        description="values (objects, lists, scalars) in a document, YAML aliases expanded",
    )
    max_string: int = Field(
        default=1_000_000, ge=100, description="characters of one string (or mapping key)"
    )
    max_yaml_aliases: int = Field(
        default=100, ge=0, description="YAML aliases (*name) in a document; 0 refuses them all"
    )
    max_yaml_alias_values: int = Field(
        default=100_000,
        ge=0,
        description="values a YAML document's aliases may add once expanded (a 9-level alias "
        "bomb adds billions)",
    )
    max_expression_chars: int = Field(
        default=2_000, ge=50, description="characters of one rule or workflow expression"
    )
    max_value_items: int = Field(
        default=100_000,
        ge=100,
        description="characters of a string, or items of a list, that an expression builds",
    )
    max_or_variants: int = Field(
        default=256,
        ge=2,
        description="alternatives a rule's nested 'or' conditions expand into",
    )
    max_firings: int = Field(
        default=100_000, ge=1, description="ceiling on a rule evaluation's max_firings"
    )
    eval_cpu_s: float = Field(
        default=5.0,
        gt=0,
        le=600,
        description="CPU seconds one rule evaluation may use before it fails with a 422",
    )
    admission_cpu_s: float = Field(
        default=0.5,
        gt=0,
        le=60,
        description="CPU seconds the admission ruleset may spend on one submitted task "
        "(its metadata are facts a client controls); past it the task is refused with a 503",
    )


DEFAULT_LIMITS: Final = InputLimits()

Loc = list[str | int]


def _too_much(loc: Loc, msg: str) -> ValidationError:
    where = ".".join(map(str, loc)) or "body"
    return ValidationError(f"{where}: {msg}", details=[{"loc": loc, "msg": msg}])


def _short(loc: list[Any]) -> Loc:
    """A location, its middle elided past a dozen parts (a 500-deep path says nothing)."""
    return loc if len(loc) <= 12 else [*loc[:6], "...", *loc[-5:]]


def check_tree(value: Any, limits: InputLimits = DEFAULT_LIMITS, loc: Loc | None = None) -> None:
    """Refuse decoded JSON ``value`` past ``limits`` (depth, nodes, string length).

    Iterative, and stops at the first value over a bound: the error names where it is.
    """
    base: Loc = list(loc or [])
    stack: list[tuple[Any, int, tuple[Any, ...]]] = [(value, 1, ())]
    nodes = 0
    while stack:
        item, depth, path = stack.pop()
        nodes += 1
        if nodes > limits.max_nodes:
            raise _too_much(base, f"more than {limits.max_nodes} values")
        if depth > limits.max_depth:
            raise _too_much(_short([*base, *path]), f"nested deeper than {limits.max_depth}")
        if isinstance(item, str):
            if len(item) > limits.max_string:
                raise _too_much(
                    _short([*base, *path]), f"string longer than {limits.max_string} characters"
                )
        elif isinstance(item, dict):
            for k, v in item.items():
                if isinstance(k, str) and len(k) > limits.max_string:
                    raise _too_much(_short([*base, *path]), "mapping key too long")
                stack.append((v, depth + 1, (*path, k)))
        elif isinstance(item, list | tuple):
            stack.extend((v, depth + 1, (*path, i)) for i, v in enumerate(item))


# --------------------------------------------------------------------------- YAML


class _Refused(yaml.YAMLError):
    """A limit or a forbidden construct, with where it was found."""

    def __init__(self, msg: str, node: Node | None = None) -> None:
        super().__init__(msg)
        self.msg = msg
        self.mark = node.start_mark if node is not None else None


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that counts depth and aliases while composing, and builds JSON values only.

    ``!!binary``, ``!!set``, ``!!omap`` and ``!!pairs`` build values JSON cannot hold, so they
    are refused; timestamps stay the strings they were written as; mapping keys must be
    strings (``1:`` or ``yes:`` would otherwise become an int or a bool).
    """

    limits: InputLimits = DEFAULT_LIMITS

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._aliases = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        if self.check_event(AliasEvent):
            self._aliases += 1
            if self._aliases > self.limits.max_yaml_aliases:
                event = self.peek_event()  # type: ignore[no-untyped-call]
                raise _Refused(
                    f"more than {self.limits.max_yaml_aliases} YAML aliases",
                    ScalarNode("", "", event.start_mark, event.end_mark),
                )
        self._depth += 1
        try:
            if self._depth > self.limits.max_depth:
                event = self.peek_event()  # type: ignore[no-untyped-call]
                raise _Refused(
                    f"nested deeper than {self.limits.max_depth}",
                    ScalarNode("", "", event.start_mark, event.end_mark),
                )
            node: Node = super().compose_node(parent, index)  # type: ignore[assignment]
            return node
        finally:
            self._depth -= 1

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        for key_node, _ in node.value:
            if not (isinstance(key_node, ScalarNode) and key_node.tag in _KEY_TAGS):
                raise _Refused("mapping keys must be strings (quote the key)", key_node)
        return super().construct_mapping(node, deep=deep)


_KEY_TAGS: Final = frozenset({"tag:yaml.org,2002:str", "tag:yaml.org,2002:merge"})


def _refuse_tag(loader: _BoundedLoader, node: Node) -> Any:
    raise _Refused(f"YAML tag {node.tag.rsplit(':', 1)[-1]!r} is not allowed", node)


def _timestamp_as_text(loader: _BoundedLoader, node: Node) -> Any:
    return loader.construct_scalar(node)  # type: ignore[arg-type]


for _tag in ("binary", "set", "omap", "pairs"):
    _BoundedLoader.add_constructor(f"tag:yaml.org,2002:{_tag}", _refuse_tag)
_BoundedLoader.add_constructor("tag:yaml.org,2002:timestamp", _timestamp_as_text)


def _expanded(root: Node, limits: InputLimits) -> None:
    """Refuse a composed tree whose aliases add more than ``max_yaml_alias_values`` values,
    or whose expanded node count or depth is over the limits.

    Aliases make the tree a graph whose nodes are shared; sizes are memoised per node, so this
    costs one visit per distinct node whatever the expansion. A node that contains itself is
    refused (it expands forever).
    """
    size: dict[int, tuple[int, int]] = {}  # id(node) -> (expanded nodes, expanded height)
    bound = limits.max_yaml_alias_values
    open_: set[int] = set()
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            children = _children(node)
            nodes = 1 + sum(size[id(c)][0] for c in children)
            height = 1 + max((size[id(c)][1] for c in children), default=0)
            # Values past the distinct nodes seen so far can only come from aliases.
            if nodes > min(limits.max_nodes, len(size) + 1 + bound):
                raise _Refused(
                    f"its aliases expand it by more than {bound} values"
                    if nodes <= limits.max_nodes
                    else f"more than {limits.max_nodes} values once its aliases are expanded",
                    node,
                )
            if height > limits.max_depth:
                raise _Refused(
                    f"nested deeper than {limits.max_depth} once its aliases are expanded", node
                )
            size[key] = (nodes, height)
            open_.discard(key)
            continue
        if key in size:
            continue
        if key in open_:
            raise _Refused("a YAML alias refers to a node that contains it", node)
        open_.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in _children(node) if id(c) not in size)


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def load_yaml(
    text: str,
    limits: InputLimits = DEFAULT_LIMITS,
    *,
    what: str = "document",
    loc: Loc | None = None,
) -> Any:
    """Parse YAML (or JSON) ``text`` within ``limits``; a ValidationError names the line.

    Raises:
        ValidationError: a syntax error, a refused construct or a limit, with its position.
    """
    at: Loc = list(loc or [])
    if len(text) > limits.max_bytes or len(text.encode("utf-8", "replace")) > limits.max_bytes:
        raise _too_much(at, f"{what} is larger than {limits.max_bytes} bytes")
    loader_cls = type("_Loader", (_BoundedLoader,), {"limits": limits})
    try:  # the reader refuses control characters as soon as it is built
        loader = loader_cls(text)
    except yaml.YAMLError as exc:
        raise ValidationError(
            f"{what} is not valid YAML/JSON", details=[{"loc": at, "msg": str(exc)[:300]}]
        ) from None
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded(node, limits)
        data = loader.construct_document(node)
    except _Refused as exc:
        where = _where(exc.mark)
        raise ValidationError(
            f"{what} refused{where}: {exc.msg}", details=[{"loc": at, "msg": exc.msg + where}]
        ) from None
    except RecursionError:
        raise ValidationError(
            f"{what} is nested too deeply", details=[{"loc": at, "msg": "nested too deeply"}]
        ) from None
    except yaml.YAMLError as exc:
        where = _where(getattr(exc, "problem_mark", None))
        problem = getattr(exc, "problem", None) or str(exc)
        raise ValidationError(
            f"{what} is not valid YAML/JSON{where}",
            details=[{"loc": at, "msg": f"syntax error{where}: {problem}"}],
        ) from None
    finally:
        loader.dispose()
    check_tree(data, limits, at)
    return data


def _where(mark: Any) -> str:
    return f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""


def load_json(
    text: str | bytes,
    limits: InputLimits = DEFAULT_LIMITS,
    *,
    what: str = "document",
    loc: Loc | None = None,
) -> Any:
    """Parse JSON ``text`` within ``limits``; a ValidationError names what and where."""
    at: Loc = list(loc or [])
    if len(text) > limits.max_bytes:
        raise _too_much(at, f"{what} is larger than {limits.max_bytes} bytes")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        msg = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise ValidationError(
            f"{what} is not valid JSON: {msg}", details=[{"loc": at, "msg": msg}]
        ) from None
    check_tree(data, limits, at)
    return data


def read_document(path: Path, limits: InputLimits = DEFAULT_LIMITS) -> Any:
    """A ``.yaml``/``.yml``/``.json`` file's content within ``limits``; a ValidationError naming
    the file when it cannot be read or parsed, or is over a limit."""
    try:
        with path.open("rb") as f:
            raw = f.read(limits.max_bytes + 1)
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValidationError(
            f"cannot read {path}: {exc}", details=[{"loc": [str(path)], "msg": str(exc)}]
        ) from None
    if len(raw) > limits.max_bytes:
        msg = f"larger than {limits.max_bytes} bytes"
        raise ValidationError(f"{path}: {msg}", details=[{"loc": [str(path)], "msg": msg}])
    if path.suffix in (".yaml", ".yml"):
        return load_yaml(text, limits, what=str(path), loc=[str(path)])
    return load_json(text, limits, what=str(path), loc=[str(path)])
