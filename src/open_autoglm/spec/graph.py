"""Graph inputs: parse, validate and normalise a node-classification graph.

A graph arrives as JSON (``{"nodes", "edges", "features", "labels", "edge_features",
"directed", "split"}``, see :func:`parse_graph`) or as arrays (:func:`validate_graph_arrays`;
the file loaders in :mod:`open_autoglm.spec.graph_loaders` use both). Both paths end in
the same edge-policy step, which checks the arrays and returns a frozen
:class:`GraphData`. Problems are collected, never stopping at the first one, and raised
together as one :class:`~open_autoglm.errors.ValidationError` whose ``details`` carry a
``loc`` for each (``["edges", 17]``, ``["features", 3, 2]``).

This module uses numpy only; it must not import torch.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from open_autoglm.errors import ErrorDetail, ValidationError

__all__ = [
    "GRAPH_FIELDS",
    "GraphData",
    "GraphLimits",
    "GraphPolicy",
    "NodeId",
    "parse_graph",
    "validate_graph_arrays",
]

NodeId = int | str
IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float32]
BoolArray = npt.NDArray[np.bool_]

GRAPH_FIELDS = frozenset(
    {"nodes", "edges", "features", "labels", "edge_features", "directed", "split"}
)
_SPLITS = ("train", "val", "test")
_INT64_MAX = 2**63 - 1
_MAX_ID_CHARS = 256


class GraphLimits(BaseModel):
    """Size limits; a graph past any of them is rejected before the deep checks run."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_nodes: int = Field(default=1_000_000, ge=1)
    max_edges: int = Field(default=10_000_000, ge=0)
    max_feature_dim: int = Field(default=100_000, ge=1)
    max_problems: int = Field(default=100, ge=1)


class GraphPolicy(BaseModel):
    """What to do with self-loops and repeated edges: reject, or fix and note it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    self_loops: Literal["error", "drop", "keep"] = "error"
    # None: the input format's default, "merge" for .npz (whose arrays list an undirected
    # edge both ways, as Planetoid's do), "error" for everything else.
    duplicate_edges: Literal["error", "merge"] | None = None

    def resolved(self, duplicates: Literal["error", "merge"]) -> GraphPolicy:
        """This policy with ``duplicates`` where it leaves the choice to the format."""
        if self.duplicate_edges is not None:
            return self
        return self.model_copy(update={"duplicate_edges": duplicates})


@dataclass(frozen=True)
class GraphData:
    """A validated graph. Arrays are read-only; ``node_ids[i]`` is the user id of node ``i``.

    For an undirected graph ``edge_index`` holds each edge once; use
    :meth:`message_edge_index` for the both-directions form message passing needs.
    ``labels`` is -1 where a node is unlabeled; ``label_names[c]`` is the user's class c.
    """

    node_ids: tuple[NodeId, ...]
    edge_index: IntArray  # (2, edges)
    directed: bool
    features: FloatArray | None = None  # (nodes, feature_dim)
    labels: IntArray | None = None  # (nodes,)
    label_names: tuple[NodeId, ...] = ()
    edge_features: FloatArray | None = None  # (edges, edge_dim)
    splits: Mapping[str, BoolArray] = field(default_factory=dict)  # name -> (nodes,)
    notes: tuple[ErrorDetail, ...] = ()  # fixes applied under the policy

    @property
    def num_nodes(self) -> int:
        return len(self.node_ids)

    @property
    def num_edges(self) -> int:
        return int(self.edge_index.shape[1])

    @property
    def num_features(self) -> int:
        return 0 if self.features is None else int(self.features.shape[1])

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    @property
    def id_to_index(self) -> dict[NodeId, int]:
        return {nid: i for i, nid in enumerate(self.node_ids)}

    def index_of(self, ids: Iterable[NodeId]) -> IntArray:
        """Map user node ids to indices; unknown ids raise one ValidationError naming all."""
        mapping = self.id_to_index
        out: list[int] = []
        problems: list[ErrorDetail] = []
        for k, nid in enumerate(ids):
            idx = mapping.get(nid) if isinstance(nid, int | str) else None
            if idx is None:
                problems.append({"loc": ["node_ids", k], "msg": f"unknown node {nid!r}"})
                out.append(-1)
            else:
                out.append(idx)
        if problems:
            raise ValidationError(f"{len(problems)} unknown node id(s)", details=problems[:100])
        return np.asarray(out, dtype=np.int64)

    def message_edge_index(self) -> IntArray:
        """Edges for message passing, shape (2, E'): both directions when undirected."""
        if self.directed:
            return self.edge_index
        ei = self.edge_index
        loops = ei[0] == ei[1]
        back = ei[::-1][:, ~loops]  # a self-loop is its own reverse
        return np.ascontiguousarray(np.concatenate([ei, back], axis=1))

    def to_mapping(self) -> dict[str, Any]:
        """The JSON-safe id mapping: node ids and class names, in index order."""
        return {"node_ids": list(self.node_ids), "label_names": list(self.label_names)}


class _Problems:
    """Collects problems up to a cap while still counting the ones past it."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.items: list[ErrorDetail] = []
        self.total = 0

    def add(self, loc: Sequence[str | int], msg: str) -> None:
        self.total += 1
        if len(self.items) < self.cap:
            self.items.append({"loc": list(loc), "msg": msg})

    @property
    def full(self) -> bool:
        return len(self.items) >= self.cap

    def raise_if_any(self) -> None:
        if not self.total:
            return
        details = list(self.items)
        if self.total > len(details):
            details.append({"loc": [], "msg": f"... and {self.total - len(details)} more"})
        noun = "problem" if self.total == 1 else "problems"
        raise ValidationError(f"invalid graph: {self.total} {noun}", details=details)


# ---------------------------------------------------------------- JSON-like input


def _check_id(value: Any, loc: Sequence[str | int], problems: _Problems) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | str):
        problems.add(loc, f"node id must be an integer or a string, got {type(value).__name__}")
        return False
    if isinstance(value, int) and not -_INT64_MAX - 1 <= value <= _INT64_MAX:
        problems.add(loc, "integer node id does not fit in 64 bits")
        return False
    if isinstance(value, str) and not 0 < len(value) <= _MAX_ID_CHARS:
        problems.add(loc, f"string node id must have 1..{_MAX_ID_CHARS} characters")
        return False
    return True


def _parse_nodes(raw: Any, problems: _Problems, limits: GraphLimits) -> list[NodeId] | None:
    if not isinstance(raw, list):
        problems.add(["nodes"], f"nodes must be a list, got {type(raw).__name__}")
        return None
    if not raw:
        problems.add(["nodes"], "graph has no nodes")
        return None
    if len(raw) > limits.max_nodes:
        problems.add(["nodes"], f"{len(raw)} nodes exceeds the limit of {limits.max_nodes}")
        return None
    ok = [_check_id(v, ["nodes", i], problems) for i, v in enumerate(raw)]
    if not all(ok):
        return None
    kinds = {type(v) for v in raw}
    if len(kinds) > 1:
        first_int = next(i for i, v in enumerate(raw) if isinstance(v, int))
        first_str = next(i for i, v in enumerate(raw) if isinstance(v, str))
        problems.add(
            ["nodes"],
            f"node ids mix integers and strings (nodes[{first_int}] is an integer, "
            f"nodes[{first_str}] a string); use one type",
        )
        return None
    seen: dict[NodeId, int] = {}
    for i, v in enumerate(raw):
        if v in seen:
            problems.add(["nodes", i], f"duplicate node id {v!r} (first at nodes[{seen[v]}])")
        else:
            seen[v] = i
    return list(raw)  # with duplicates the first one wins, so edges can still be checked


def _parse_edges(
    raw: Any, mapping: Mapping[NodeId, int] | None, problems: _Problems, limits: GraphLimits
) -> tuple[IntArray, BoolArray] | None:
    """Map edge ends to indices; the mask marks edges whose two ends were both resolved."""
    if not isinstance(raw, list):
        problems.add(
            ["edges"], f"edges must be a list of [src, dst] pairs, got {type(raw).__name__}"
        )
        return None
    if len(raw) > limits.max_edges:
        problems.add(["edges"], f"{len(raw)} edges exceeds the limit of {limits.max_edges}")
        return None
    out = np.zeros((2, len(raw)), dtype=np.int64)
    ok = np.ones(len(raw), dtype=np.bool_)
    for k, pair in enumerate(raw):
        if not isinstance(pair, list | tuple) or len(pair) != 2:
            problems.add(["edges", k], "edge must be a [src, dst] pair")
            ok[k] = False
            continue
        for side, end in enumerate(pair):
            if isinstance(end, bool) or not isinstance(end, int | str):
                problems.add(
                    ["edges", k, side], f"edge end must be a node id, got {type(end).__name__}"
                )
                ok[k] = False
            elif mapping is not None:
                idx = mapping.get(end)
                if idx is None:
                    a, b = (_fmt(x) for x in pair)
                    problems.add(
                        ["edges", k], f"edge ({a}, {b}) references undeclared node {_fmt(end)}"
                    )
                    ok[k] = False
                else:
                    out[side, k] = idx
    return (out, ok) if mapping is not None else None


def _fmt(value: Any) -> str:
    """Show an id the way a user wrote it: 5, or 'paper-5' quoted when it is a string."""
    return repr(value) if isinstance(value, str) else str(value)


def _parse_matrix(
    raw: Any, name: str, rows: int | None, problems: _Problems, limits: GraphLimits
) -> FloatArray | None:
    """Parse a list of equal-length numeric rows into (rows, dim) float32, naming bad cells."""
    if not isinstance(raw, list):
        problems.add([name], f"{name} must be a list of rows, got {type(raw).__name__}")
        return None
    if rows is not None and len(raw) != rows:
        what = "nodes" if name == "features" else "edges"
        problems.add([name], f"{name} has {len(raw)} rows but the graph has {rows} {what}")
        return None
    if not raw:
        return np.zeros((0, 0), dtype=np.float32)
    if not isinstance(raw[0], list) or not raw[0]:
        problems.add([name, 0], "row must be a non-empty list of numbers")
        return None
    dim = len(raw[0])
    if dim > limits.max_feature_dim:
        problems.add([name], f"dimension {dim} exceeds the limit of {limits.max_feature_dim}")
        return None
    try:  # fast path: rectangular and numeric
        arr = np.asarray(raw, dtype=np.float64)
        if arr.ndim != 2 or any(isinstance(c, bool) for c in raw[0]):
            raise ValueError
    except (ValueError, TypeError):
        arr = None
    if arr is None:
        for i, row in enumerate(raw):
            if not isinstance(row, list):
                problems.add([name, i], f"row must be a list, got {type(row).__name__}")
            elif len(row) != dim:
                problems.add([name, i], f"row has {len(row)} values, expected {dim}")
            else:
                for j, c in enumerate(row):
                    if isinstance(c, bool) or not isinstance(c, int | float):
                        problems.add(
                            [name, i, j], f"value must be a number, got {type(c).__name__}"
                        )
                    elif not math.isfinite(c):
                        problems.add([name, i, j], f"value is not finite ({c})")
            if problems.full:
                break
        return None
    return _check_finite(arr, name, problems)


def _check_finite(arr: npt.NDArray[Any], name: str, problems: _Problems) -> FloatArray | None:
    bad = ~np.isfinite(arr)
    if bad.any():
        for i, j in np.argwhere(bad)[: problems.cap]:
            problems.add([name, int(i), int(j)], f"value is not finite ({arr[i, j]})")
        problems.total += int(bad.sum()) - min(int(bad.sum()), problems.cap)
        return None
    if np.abs(arr).max(initial=0.0) > np.finfo(np.float32).max:
        problems.add([name], "values overflow float32")
        return None
    return arr.astype(np.float32)


def _parse_labels(
    raw: Any, n: int | None, problems: _Problems
) -> tuple[IntArray, tuple[NodeId, ...]] | None:
    if not isinstance(raw, list):
        problems.add(["labels"], f"labels must be a list, got {type(raw).__name__}")
        return None
    if n is not None and len(raw) != n:
        problems.add(["labels"], f"labels has {len(raw)} entries but the graph has {n} nodes")
        return None
    kinds: set[type] = set()
    clean = True
    for i, v in enumerate(raw):
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, int | str):
            problems.add(
                ["labels", i], f"label must be an integer, a string or null, got {type(v).__name__}"
            )
            clean = False
        elif isinstance(v, int) and v < 0:
            problems.add(["labels", i], f"integer label must be >= 0, got {v}")
            clean = False
        else:
            kinds.add(type(v))
    if len(kinds) > 1:
        problems.add(["labels"], "labels mix integers and strings; use one type")
        clean = False
    if not clean:
        return None
    present = {v for v in raw if v is not None}
    names: list[NodeId]
    if kinds == {int}:  # integer classes keep their value as index, gaps allowed
        names = list(range(max(int(v) for v in present) + 1))
    else:
        names = sorted(str(v) for v in present)
    index = {c: k for k, c in enumerate(names)}
    y = np.asarray([-1 if v is None else index[v] for v in raw], dtype=np.int64)
    return y, tuple(names)


def _parse_split(
    raw: Any, mapping: Mapping[NodeId, int] | None, n: int, problems: _Problems
) -> dict[str, BoolArray]:
    if not isinstance(raw, dict):
        problems.add(["split"], "split must be an object of node-id lists (train/val/test)")
        return {}
    out: dict[str, BoolArray] = {}
    for key, ids in raw.items():
        if key not in _SPLITS:
            problems.add(["split", key], f"unknown split {key!r}; use train, val or test")
            continue
        if not isinstance(ids, list):
            problems.add(["split", key], "split must list node ids")
            continue
        mask = np.zeros(n, dtype=np.bool_)
        for k, nid in enumerate(ids):
            idx = mapping.get(nid) if mapping is not None and isinstance(nid, int | str) else None
            if idx is None:
                if mapping is not None:
                    problems.add(["split", key, k], f"split references undeclared node {_fmt(nid)}")
            else:
                mask[idx] = True
        out[key] = mask
    return out


def parse_graph(
    obj: Any, *, policy: GraphPolicy | None = None, limits: GraphLimits | None = None
) -> GraphData:
    """Validate a JSON-like graph and return a :class:`GraphData`; raise with all problems."""
    policy = (policy or GraphPolicy()).resolved("error")
    limits = limits or GraphLimits()
    problems = _Problems(limits.max_problems)
    if not isinstance(obj, dict):
        problems.add([], f"graph must be a JSON object, got {type(obj).__name__}")
        problems.raise_if_any()
    for key in obj:
        if key not in GRAPH_FIELDS:
            problems.add([str(key)], f"unknown field {key!r}")
    if "nodes" not in obj:
        problems.add(["nodes"], "field required")
    nodes = _parse_nodes(obj["nodes"], problems, limits) if "nodes" in obj else None
    mapping: dict[NodeId, int] | None = None
    if nodes is not None:
        mapping = {}
        for i, nid in enumerate(nodes):
            mapping.setdefault(nid, i)
    n = len(nodes) if nodes is not None else None
    edges = _parse_edges(obj.get("edges", []), mapping, problems, limits)
    n_edges = len(obj["edges"]) if isinstance(obj.get("edges"), list) else None
    directed = obj.get("directed", False)
    if not isinstance(directed, bool):
        problems.add(["directed"], "directed must be true or false")
    features = (
        _parse_matrix(obj["features"], "features", n, problems, limits)
        if obj.get("features") is not None
        else None
    )
    labels = _parse_labels(obj["labels"], n, problems) if obj.get("labels") is not None else None
    edge_features = (
        _parse_matrix(obj["edge_features"], "edge_features", n_edges, problems, limits)
        if obj.get("edge_features") is not None
        else None
    )
    splits = _parse_split(obj["split"], mapping, n or 0, problems) if "split" in obj else {}
    if nodes is None or edges is None:
        problems.raise_if_any()
        raise ValidationError("invalid graph")  # unreachable: a None part always adds a problem
    return _finish(
        tuple(nodes),
        edges[0],
        valid=edges[1],
        directed=bool(directed),
        features=features,
        labels=labels,
        edge_features=edge_features if edge_features is None or edge_features.size else None,
        splits=splits,
        policy=policy,
        limits=limits,
        problems=problems,
    )


# ---------------------------------------------------------------- array-level checks


def validate_graph_arrays(
    node_ids: Sequence[NodeId] | int,
    edge_index: npt.ArrayLike,
    *,
    directed: bool = False,
    features: npt.ArrayLike | None = None,
    labels: npt.ArrayLike | None = None,
    label_names: Sequence[NodeId] | None = None,
    edge_features: npt.ArrayLike | None = None,
    splits: Mapping[str, npt.ArrayLike] | None = None,
    policy: GraphPolicy | None = None,
    limits: GraphLimits | None = None,
) -> GraphData:
    """Validate a graph given as arrays of indices (``node_ids`` may be a node count)."""
    policy = (policy or GraphPolicy()).resolved("error")
    limits = limits or GraphLimits()
    problems = _Problems(limits.max_problems)
    ids: tuple[NodeId, ...] = (
        tuple(range(node_ids)) if isinstance(node_ids, int) else tuple(node_ids)
    )
    n = len(ids)
    if n == 0:
        problems.add(["nodes"], "graph has no nodes")
    if n > limits.max_nodes:
        problems.add(["nodes"], f"{n} nodes exceeds the limit of {limits.max_nodes}")
    ei = np.asarray(edge_index)
    if ei.ndim != 2 or ei.shape[0] != 2 or not np.issubdtype(ei.dtype, np.integer):
        problems.add(
            ["edges"], f"edge_index must be an integer array of shape (2, E), got {ei.shape}"
        )
    elif ei.shape[1] > limits.max_edges:
        problems.add(["edges"], f"{ei.shape[1]} edges exceeds the limit of {limits.max_edges}")
    else:
        ei = ei.astype(np.int64)
        bad = np.flatnonzero(((ei < 0) | (ei >= n)).any(axis=0))
        for k in bad[: problems.cap]:
            s, d = int(ei[0, k]), int(ei[1, k])
            miss = d if 0 <= s < n else s
            problems.add(["edges", int(k)], f"edge ({s}, {d}) references undeclared node {miss}")
        problems.total += max(0, len(bad) - problems.cap)
    x = _array_matrix(features, "features", n, problems, limits)
    ef = _array_matrix(edge_features, "edge_features", int(ei.shape[-1]), problems, limits)
    lab: tuple[IntArray, tuple[NodeId, ...]] | None = None
    if labels is not None:
        y = np.asarray(labels)
        if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer):
            problems.add(["labels"], f"labels must be {n} integers, got shape {y.shape}")
        elif (y < -1).any():
            problems.add(
                ["labels", int(np.argmax(y < -1))], "labels must be >= -1 (-1 = unlabeled)"
            )
        else:
            k = int(y.max(initial=-1)) + 1
            names = tuple(label_names) if label_names is not None else tuple(range(k))
            if len(names) < k:
                problems.add(["labels"], f"{k} classes but only {len(names)} label names")
            lab = (y.astype(np.int64), names)
    masks: dict[str, BoolArray] = {}
    for key, m in (splits or {}).items():
        arr = np.asarray(m)
        if arr.shape != (n,):
            problems.add(["split", key], f"mask must have shape ({n},), got {arr.shape}")
        else:
            masks[key] = arr.astype(np.bool_)
    problems.raise_if_any()
    return _finish(
        ids, ei, directed=directed, features=x, labels=lab, edge_features=ef,
        splits=masks, policy=policy, limits=limits, problems=problems,
    )  # fmt: skip


def _array_matrix(
    raw: npt.ArrayLike | None, name: str, rows: int, problems: _Problems, limits: GraphLimits
) -> FloatArray | None:
    if raw is None:
        return None
    arr = np.asarray(raw)
    if arr.ndim != 2 or arr.shape[0] != rows:
        problems.add([name], f"{name} must have shape ({rows}, dim), got {arr.shape}")
        return None
    if arr.shape[1] > limits.max_feature_dim:
        problems.add(
            [name], f"dimension {arr.shape[1]} exceeds the limit of {limits.max_feature_dim}"
        )
        return None
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        problems.add([name], f"{name} must be real numbers, got dtype {arr.dtype}")
        return None
    return _check_finite(arr, name, problems)


def _finish(
    ids: tuple[NodeId, ...],
    edge_index: IntArray,
    *,
    valid: BoolArray | None = None,
    directed: bool,
    features: FloatArray | None,
    labels: tuple[IntArray, tuple[NodeId, ...]] | None,
    edge_features: FloatArray | None,
    splits: Mapping[str, BoolArray],
    policy: GraphPolicy,
    limits: GraphLimits,
    problems: _Problems,
) -> GraphData:
    """Apply the self-loop and duplicate-edge policy, raise everything found, then freeze.

    ``valid`` marks edges whose ends resolved; only those take part in the policy checks, so
    a graph with bad edges still gets its self-loops and duplicates reported in one go.
    """
    n = len(ids)
    notes: list[ErrorDetail] = []
    keep = np.ones(edge_index.shape[1], dtype=np.bool_) if valid is None else valid.copy()
    loops = np.flatnonzero((edge_index[0] == edge_index[1]) & keep)
    if loops.size and policy.self_loops == "error":
        for k in loops[: problems.cap]:
            a = _fmt(ids[edge_index[0, k]])
            problems.add(["edges", int(k)], f"edge ({a}, {a}) is a self-loop (policy: error)")
        problems.total += max(0, loops.size - problems.cap)
    elif loops.size and policy.self_loops == "drop":
        keep[loops] = False
        notes.append({"loc": ["edges"], "msg": f"dropped {loops.size} self-loop(s)"})
    lo, hi = edge_index if directed else (edge_index.min(axis=0), edge_index.max(axis=0))
    key = lo * np.int64(n) + hi  # one int64 per (src, dst), reverse pairs equal if undirected
    key = np.where(keep, key, -1 - np.arange(key.size))  # dropped edges never collide
    order = np.argsort(key, kind="stable")
    sk = key[order]
    starts = np.ones(sk.size, dtype=np.bool_)
    starts[1:] = sk[1:] != sk[:-1]
    first = order[np.maximum.accumulate(np.where(starts, np.arange(sk.size), 0))]
    dup_sorted = ~starts
    dups, firsts = order[dup_sorted], first[dup_sorted]
    if dups.size and policy.duplicate_edges == "error":
        for k, f in sorted(zip(dups.tolist(), firsts.tolist(), strict=True))[: problems.cap]:
            a, b = _fmt(ids[edge_index[0, k]]), _fmt(ids[edge_index[1, k]])
            problems.add(["edges", k], f"edge ({a}, {b}) duplicates edges[{f}] (policy: error)")
        problems.total += max(0, dups.size - problems.cap)
    elif dups.size:
        keep[dups] = False
        notes.append(
            {"loc": ["edges"], "msg": f"merged {dups.size} duplicate edge(s), kept the first"}
        )
    problems.raise_if_any()
    ei = np.ascontiguousarray(edge_index[:, keep])
    ef = edge_features[keep] if edge_features is not None else None
    y, names = labels if labels is not None else (None, ())
    for arr in (ei, features, ef, y, *splits.values()):
        if arr is not None:
            arr.flags.writeable = False
    return GraphData(
        node_ids=ids,
        edge_index=ei,
        directed=directed,
        features=features,
        labels=y,
        label_names=names,
        edge_features=ef,
        splits=dict(splits),
        notes=tuple(notes),
    )
