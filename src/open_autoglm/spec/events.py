"""Event-stream inputs: parse, validate and normalise a stream of timestamped interactions.

A stream is a sequence of events ``(src, dst, t, [edge features], [label])``. It arrives as
JSON (:func:`parse_events`) or as columns (:func:`validate_event_arrays`; the file loaders in
:mod:`open_autoglm.spec.event_loaders` use both). Problems are collected, never stopping at
the first one, and raised together as one :class:`~open_autoglm.errors.ValidationError`
whose ``details`` carry a ``loc`` for each (``["events", 17, "t"]``,
``["edge_features", 3, 2]``). An unsorted stream is either rejected or sorted (stably, by
time) under :class:`EventPolicy`; a sort is reported in ``notes``.

This module uses numpy only; it must not import torch.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from open_autoglm.errors import ErrorDetail, ValidationError
from open_autoglm.spec.graph import NodeId, _Problems

__all__ = [
    "EVENT_FIELDS",
    "EventLimits",
    "EventPolicy",
    "EventStream",
    "OrderPolicy",
    "parse_events",
    "validate_event_arrays",
]

IntArray = npt.NDArray[np.int64]
TimeArray = npt.NDArray[np.float64]
FloatArray = npt.NDArray[np.float32]

EVENT_FIELDS = frozenset({"nodes", "events", "edge_features", "labels"})
_MAX_ID_CHARS = 256
_INT64 = 2**63


class OrderPolicy(enum.StrEnum):
    """What to do when events are not in time order."""

    ERROR = "error"  # list the first out-of-order events and reject the stream
    SORT = "sort"  # sort stably by time (ties keep their input order) and note it


class EventLimits(BaseModel):
    """Size limits; a stream past any of them is rejected before the deep checks run."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_events: int = Field(default=20_000_000, ge=1)
    max_nodes: int = Field(default=10_000_000, ge=1)
    max_feature_dim: int = Field(default=10_000, ge=1)
    max_problems: int = Field(default=100, ge=1)


class EventPolicy(BaseModel):
    """How an unsorted stream is handled (default: sort it and say so)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    unsorted: OrderPolicy = OrderPolicy.SORT


@dataclass(frozen=True)
class EventStream:
    """A validated stream in time order. Arrays are read-only.

    ``node_ids[i]`` is the user id of node ``i``; ``src``/``dst`` hold node indices.
    ``edge_features`` is None when the stream has none (zero width), ``labels`` None when
    events carry no label.
    """

    node_ids: tuple[NodeId, ...]
    src: IntArray  # (events,)
    dst: IntArray  # (events,)
    t: TimeArray  # (events,) non-decreasing
    edge_features: FloatArray | None = None  # (events, edge_dim)
    labels: FloatArray | None = None  # (events,)
    notes: tuple[ErrorDetail, ...] = ()

    @property
    def num_events(self) -> int:
        return int(self.src.shape[0])

    @property
    def num_nodes(self) -> int:
        return len(self.node_ids)

    @property
    def edge_dim(self) -> int:
        return 0 if self.edge_features is None else int(self.edge_features.shape[1])

    @property
    def id_to_index(self) -> dict[NodeId, int]:
        return {nid: i for i, nid in enumerate(self.node_ids)}

    def index_of(self, ids: Iterable[Any], loc: str = "node_ids") -> IntArray:
        """Map user ids to indices; unknown ids raise one ValidationError naming all."""
        mapping = self.id_to_index
        out: list[int] = []
        problems: list[ErrorDetail] = []
        for k, nid in enumerate(ids):
            idx = mapping.get(nid) if isinstance(nid, int | str) else None
            if idx is None:
                problems.append({"loc": [loc, k], "msg": f"unknown node {nid!r}"})
            out.append(-1 if idx is None else idx)
        if problems:
            raise ValidationError(f"{len(problems)} unknown node id(s)", details=problems[:100])
        return np.asarray(out, dtype=np.int64)

    def to_mapping(self) -> dict[str, Any]:
        """The JSON-safe id map: node ids in index order."""
        return {"node_ids": list(self.node_ids)}

    def select(self, mask: npt.NDArray[np.bool_]) -> EventStream:
        """The events where ``mask`` is true (same node ids, still in time order)."""
        return EventStream(
            node_ids=self.node_ids,
            src=_frozen(self.src[mask]),
            dst=_frozen(self.dst[mask]),
            t=_frozen(self.t[mask]),
            edge_features=None if self.edge_features is None else _frozen(self.edge_features[mask]),
            labels=None if self.labels is None else _frozen(self.labels[mask]),
            notes=self.notes,
        )


class _StreamProblems(_Problems):
    """The graph validator's problem list, reported as an event-stream problem."""

    def raise_if_any(self) -> None:
        try:
            super().raise_if_any()
        except ValidationError as exc:
            raise ValidationError(
                exc.message.replace("invalid graph", "invalid event stream"), details=exc.details
            ) from None


def _show(value: Any) -> str:
    """An id as the user wrote it: 5, or 'paper-5' quoted when it is a string."""
    value = value.item() if isinstance(value, np.generic) else value
    return repr(value) if isinstance(value, str) else str(value)


def _frozen(arr: npt.NDArray[Any]) -> npt.NDArray[Any]:
    arr = np.ascontiguousarray(arr)
    arr.flags.writeable = False
    return arr


# ---------------------------------------------------------------- JSON-like input


def _id_problem(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | str):
        return f"node id must be an integer or a string, got {type(value).__name__}"
    if isinstance(value, int) and not -_INT64 <= value < _INT64:
        return "integer node id does not fit in 64 bits"
    if isinstance(value, str) and not 0 < len(value) <= _MAX_ID_CHARS:
        return f"string node id must have 1..{_MAX_ID_CHARS} characters"
    return None


def _number_problem(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"must be a number, got {type(value).__name__}"
    if not math.isfinite(value):
        return f"is not finite ({value})"
    return None


def parse_events(
    obj: Any, *, policy: EventPolicy | None = None, limits: EventLimits | None = None
) -> EventStream:
    """Validate a JSON stream.

    ``obj`` is ``{"events": [...], "nodes"?, "edge_features"?, "labels"?}``. Each event is
    ``[src, dst, t]`` or ``{"src", "dst", "t", "features"?, "label"?}``; top-level
    ``edge_features`` (one row per event) and ``labels`` are the columnar alternative.
    With ``nodes`` declared, every event end must be one of them.
    """
    limits = limits or EventLimits()
    problems = _StreamProblems(limits.max_problems)
    if not isinstance(obj, dict):
        raise ValidationError(
            "an event stream must be a JSON object",
            details=[{"loc": [], "msg": f"got {type(obj).__name__}"}],
        )
    for key in sorted(set(obj) - EVENT_FIELDS):
        problems.add([key], f"unknown field; allowed: {', '.join(sorted(EVENT_FIELDS))}")
    raw = obj.get("events")
    if not isinstance(raw, list):
        problems.add(["events"], "events must be a list of [src, dst, t] or objects")
        problems.raise_if_any()
        raise ValidationError("invalid event stream")  # unreachable
    if len(raw) > limits.max_events:
        problems.add(["events"], f"{len(raw)} events exceeds the limit of {limits.max_events}")
        problems.raise_if_any()
    declared: list[NodeId] | None = None
    if obj.get("nodes") is not None:
        declared = _parse_nodes(obj["nodes"], problems, limits)
    srcs: list[Any] = []
    dsts: list[Any] = []
    times: list[float] = []
    feats: list[Any] | None = (
        [] if any(isinstance(e, dict) and "features" in e for e in raw) else None
    )
    labels: list[Any] | None = (
        [] if any(isinstance(e, dict) and "label" in e for e in raw) else None
    )
    for k, ev in enumerate(raw):
        if isinstance(ev, list | tuple):
            if len(ev) != 3:
                problems.add(["events", k], f"event must be [src, dst, t], got {len(ev)} values")
                ev = [None, None, None]
            s, d, t = ev
            f, lab = None, None
        elif isinstance(ev, dict):
            extra = set(ev) - {"src", "dst", "t", "features", "label"}
            if extra:
                problems.add(["events", k], f"unknown event field(s): {', '.join(sorted(extra))}")
            s, d, t = ev.get("src"), ev.get("dst"), ev.get("t")
            f, lab = ev.get("features"), ev.get("label")
            for name, value in (("src", s), ("dst", d), ("t", t)):
                if value is None:
                    problems.add(["events", k, name], "field required")
        else:
            problems.add(
                ["events", k], f"event must be a list or an object, got {type(ev).__name__}"
            )
            s = d = t = f = lab = None
        for name, value in (("src", s), ("dst", d)):
            if value is not None and (msg := _id_problem(value)):
                problems.add(["events", k, name], msg)
        if t is not None and (msg := _number_problem(t)):
            problems.add(["events", k, "t"], f"timestamp {msg}")
        srcs.append(s)
        dsts.append(d)
        times.append(
            float(t) if isinstance(t, int | float) and not isinstance(t, bool) else math.nan
        )
        if feats is not None:
            feats.append(f)
        if labels is not None:
            labels.append(lab)
    if feats is not None and obj.get("edge_features") is not None:
        problems.add(["edge_features"], "give features per event or as edge_features, not both")
    ef_raw = obj.get("edge_features") if feats is None else feats
    lab_raw = obj.get("labels") if labels is None else labels
    ef = _parse_rows(ef_raw, len(raw), problems, limits) if ef_raw is not None else None
    lab_arr = _parse_labels(lab_raw, len(raw), problems) if lab_raw is not None else None
    problems.raise_if_any()
    return validate_event_arrays(
        np.asarray(srcs, dtype=object),
        np.asarray(dsts, dtype=object),
        np.asarray(times, dtype=np.float64),
        edge_features=ef,
        labels=lab_arr,
        nodes=declared,
        policy=policy,
        limits=limits,
    )


def _parse_nodes(raw: Any, problems: _Problems, limits: EventLimits) -> list[NodeId] | None:
    if not isinstance(raw, list):
        problems.add(["nodes"], f"nodes must be a list, got {type(raw).__name__}")
        return None
    if len(raw) > limits.max_nodes:
        problems.add(["nodes"], f"{len(raw)} nodes exceeds the limit of {limits.max_nodes}")
        return None
    ok = True
    seen: dict[Any, int] = {}
    for i, v in enumerate(raw):
        if msg := _id_problem(v):
            problems.add(["nodes", i], msg)
            ok = False
        elif v in seen:
            problems.add(["nodes", i], f"duplicate node id {v!r} (first at nodes[{seen[v]}])")
        else:
            seen[v] = i
    return list(seen) if ok else None


def _parse_rows(raw: Any, n: int, problems: _Problems, limits: EventLimits) -> FloatArray | None:
    """Rows of numbers, one per event, all of one width; each bad cell named."""
    if not isinstance(raw, list):
        problems.add(
            ["edge_features"], f"edge_features must be a list of rows, got {type(raw).__name__}"
        )
        return None
    if len(raw) != n:
        problems.add(
            ["edge_features"], f"edge_features has {len(raw)} rows but the stream has {n} events"
        )
        return None
    if not raw:
        return None
    first = raw[0]
    dim = len(first) if isinstance(first, list) else -1
    if dim > limits.max_feature_dim:
        problems.add(
            ["edge_features"], f"width {dim} exceeds the limit of {limits.max_feature_dim}"
        )
        return None
    out = np.zeros((n, max(dim, 0)), dtype=np.float64)
    ok = dim >= 0
    if dim < 0:
        problems.add(["edge_features", 0], "row must be a list of numbers")
    for i, row in enumerate(raw):
        if not ok and problems.full:
            break
        if not isinstance(row, list):
            problems.add(["edge_features", i], f"row must be a list, got {type(row).__name__}")
            ok = False
        elif len(row) != dim:
            problems.add(
                ["edge_features", i],
                f"row has {len(row)} values, expected {dim} (the width of row 0)",
            )
            ok = False
        else:
            for j, c in enumerate(row):
                if msg := _number_problem(c):
                    problems.add(["edge_features", i, j], f"value {msg}")
                    ok = False
                else:
                    out[i, j] = c
    return out.astype(np.float32) if ok and dim > 0 else None


def _parse_labels(raw: Any, n: int, problems: _Problems) -> FloatArray | None:
    if not isinstance(raw, list) or len(raw) != n:
        problems.add(["labels"], f"labels must be a list of {n} numbers, one per event")
        return None
    ok = True
    for i, v in enumerate(raw):
        if msg := _number_problem(v):
            problems.add(["labels", i], f"label {msg}")
            ok = False
    return np.asarray(raw, dtype=np.float32) if ok else None


# ---------------------------------------------------------------- column-level checks


def _as_ids(col: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """Integer ids stay int64; anything else is compared as text."""
    if np.issubdtype(col.dtype, np.integer):
        return col.astype(np.int64)
    if col.dtype == object and all(isinstance(v, int) and not isinstance(v, bool) for v in col):
        return col.astype(np.int64)
    return col.astype(str)


def validate_event_arrays(
    src: npt.ArrayLike,
    dst: npt.ArrayLike,
    t: npt.ArrayLike,
    *,
    edge_features: npt.ArrayLike | None = None,
    labels: npt.ArrayLike | None = None,
    nodes: Sequence[NodeId] | None = None,
    policy: EventPolicy | None = None,
    limits: EventLimits | None = None,
) -> EventStream:
    """Validate a stream given as columns of user ids, times and optional features/labels.

    Without ``nodes`` the node ids are the distinct event ends, sorted. Timestamps may be
    text (CSV cells); each one that is not a finite number is reported.
    """
    policy = policy or EventPolicy()
    limits = limits or EventLimits()
    problems = _StreamProblems(limits.max_problems)
    s_raw, d_raw = np.asarray(src), np.asarray(dst)
    n = int(s_raw.shape[0]) if s_raw.ndim == 1 else -1
    if s_raw.ndim != 1 or d_raw.shape != s_raw.shape:
        problems.add(
            ["events"],
            f"src and dst must be two columns of equal length, got {s_raw.shape} and {d_raw.shape}",
        )
        problems.raise_if_any()
    if n == 0:
        problems.add(["events"], "stream has no events")
        problems.raise_if_any()
    if n > limits.max_events:
        problems.add(["events"], f"{n} events exceeds the limit of {limits.max_events}")
        problems.raise_if_any()
    times = _times(np.asarray(t), n, problems)
    for name, col in (("src", s_raw), ("dst", d_raw)):
        if col.dtype == object:
            bad = [k for k, v in enumerate(col) if v is None or _id_problem(v)]
            for k in bad[: problems.cap]:
                problems.add(["events", k, name], _id_problem(col[k]) or "node id missing")
            problems.total += max(0, len(bad) - problems.cap)
    ef = _features(edge_features, n, problems, limits)
    lab = None
    if labels is not None:
        la = np.asarray(labels)
        if la.shape != (n,) or not np.issubdtype(la.dtype, np.number):
            problems.add(
                ["labels"], f"labels must be {n} numbers, got shape {la.shape} dtype {la.dtype}"
            )
        else:
            bad_l = np.flatnonzero(~np.isfinite(la.astype(np.float64)))
            for k in bad_l[: problems.cap]:
                problems.add(["labels", int(k)], f"label is not finite ({la[k]})")
            lab = la.astype(np.float32)
    problems.raise_if_any()
    s_ids, d_ids = _as_ids(s_raw), _as_ids(d_raw)
    if s_ids.dtype != d_ids.dtype:  # one side numeric, the other text: compare as text
        s_ids, d_ids = s_ids.astype(str), d_ids.astype(str)
    if nodes is not None:
        ids: tuple[NodeId, ...] = tuple(nodes)
        key = np.asarray(ids, dtype=s_ids.dtype) if ids else np.zeros(0, dtype=s_ids.dtype)
        order = np.argsort(key, kind="stable")
        sorted_key = key[order]
        idx = []
        for name, col in (("src", s_ids), ("dst", d_ids)):
            pos = np.clip(np.searchsorted(sorted_key, col), 0, max(len(key) - 1, 0))
            found = sorted_key[pos] == col if len(key) else np.zeros(n, dtype=bool)
            for k in np.flatnonzero(~found)[: problems.cap]:
                problems.add(
                    ["events", int(k), name], f"event references undeclared node {_show(col[k])}"
                )
            problems.total += max(0, int((~found).sum()) - problems.cap)
            idx.append(order[pos].astype(np.int64))
        problems.raise_if_any()
        s_idx, d_idx = idx
    else:
        uniq, inv = np.unique(np.concatenate([s_ids, d_ids]), return_inverse=True)
        if len(uniq) > limits.max_nodes:
            problems.add(
                ["events"], f"{len(uniq)} distinct nodes exceeds the limit of {limits.max_nodes}"
            )
            problems.raise_if_any()
        ids = tuple(v.item() if isinstance(v, np.generic) else v for v in uniq)
        s_idx, d_idx = inv[:n].astype(np.int64), inv[n:].astype(np.int64)
    notes: list[ErrorDetail] = []
    if times is None:  # unreachable: a bad time column always adds a problem
        raise ValidationError("invalid event stream")
    back = np.flatnonzero(np.diff(times) < 0) + 1  # events earlier than their predecessor
    if back.size and policy.unsorted is OrderPolicy.ERROR:
        for k in back[: problems.cap]:
            problems.add(
                ["events", int(k), "t"],
                f"t={times[k]:g} is earlier than the previous event's t={times[k - 1]:g} "
                "(policy: error; use unsorted=sort)",
            )
        problems.total += max(0, back.size - problems.cap)
        problems.raise_if_any()
    if back.size:
        order = np.argsort(times, kind="stable")
        times, s_idx, d_idx = times[order], s_idx[order], d_idx[order]
        ef = None if ef is None else ef[order]
        lab = None if lab is None else lab[order]
        notes.append(
            {
                "loc": ["events"],
                "msg": f"stream was not in time order ({back.size} events earlier than their "
                "predecessor); sorted stably by t (policy: sort)",
            }
        )
    return EventStream(
        node_ids=ids,
        src=_frozen(s_idx),
        dst=_frozen(d_idx),
        t=_frozen(times),
        edge_features=None if ef is None else _frozen(ef),
        labels=None if lab is None else _frozen(lab),
        notes=tuple(notes),
    )


def _times(raw: npt.NDArray[Any], n: int, problems: _Problems) -> TimeArray | None:
    if raw.shape != (n,):
        problems.add(["events"], f"t must have one value per event ({n}), got shape {raw.shape}")
        return None
    if np.issubdtype(raw.dtype, np.number) and not np.issubdtype(raw.dtype, np.complexfloating):
        out = raw.astype(np.float64)
        numeric = np.ones(n, dtype=bool)
    else:  # text or objects: parse each, naming the ones that are not numbers
        out = np.full(n, np.nan)
        numeric = np.zeros(n, dtype=bool)
        for k, v in enumerate(raw.tolist()):
            if isinstance(v, bool):
                continue
            try:
                out[k] = float(v)
                numeric[k] = True
            except (TypeError, ValueError):
                pass
    bad = np.flatnonzero(~numeric | ~np.isfinite(out))
    for k in bad[: problems.cap]:
        what = "not a number" if not numeric[k] else f"not finite ({out[k]})"
        problems.add(["events", int(k), "t"], f"timestamp is {what}: {raw[k]!r}")
    problems.total += max(0, bad.size - problems.cap)
    return out if not bad.size else None


def _features(
    raw: npt.ArrayLike | None, n: int, problems: _Problems, limits: EventLimits
) -> FloatArray | None:
    if raw is None:
        return None
    arr = np.asarray(raw)
    if arr.ndim != 2 or arr.shape[0] != n:
        problems.add(
            ["edge_features"], f"edge_features must have shape ({n}, width), got {arr.shape}"
        )
        return None
    if arr.shape[1] == 0:
        return None
    if arr.shape[1] > limits.max_feature_dim:
        problems.add(
            ["edge_features"], f"width {arr.shape[1]} exceeds the limit of {limits.max_feature_dim}"
        )
        return None
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        problems.add(
            ["edge_features"], f"edge_features must be real numbers, got dtype {arr.dtype}"
        )
        return None
    f64 = arr.astype(np.float64)
    bad = np.argwhere(~np.isfinite(f64))
    for i, j in bad[: problems.cap]:
        problems.add(["edge_features", int(i), int(j)], f"value is not finite ({f64[i, j]})")
    problems.total += max(0, len(bad) - problems.cap)
    return f64.astype(np.float32) if not len(bad) else None
