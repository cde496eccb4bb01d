"""Validate new nodes, edges and features added to a known graph (inductive prediction).

An extension is ``{"nodes": [...], "edges": [[src, dst], ...], "features": [[...], ...]}``.
New edges may join new and existing nodes. Every problem is reported with its location
inside the extension (``["edges", 2]`` is the extension's third edge), like
:func:`open_autoglm.spec.graph.parse_graph`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from open_autoglm.spec.graph import (
    GraphData,
    GraphLimits,
    GraphPolicy,
    NodeId,
    _finish,
    _fmt,
    _parse_edges,
    _parse_matrix,
    _parse_nodes,
    _Problems,
)

__all__ = ["EXTENSION_FIELDS", "extend_graph"]

EXTENSION_FIELDS = frozenset({"nodes", "edges", "features"})


def extend_graph(
    base: GraphData,
    ext: Any,
    *,
    policy: GraphPolicy | None = None,
    limits: GraphLimits | None = None,
) -> GraphData:
    """Return ``base`` plus the extension's nodes (unlabeled) and edges; raise with all problems.

    Self-loops in the extension follow ``policy.self_loops``; edges the graph already has
    are merged, since re-stating a known edge is harmless.
    """
    policy = policy or GraphPolicy()
    limits = limits or GraphLimits()
    problems = _Problems(limits.max_problems)
    if not isinstance(ext, dict):
        problems.add([], f"graph extension must be a JSON object, got {type(ext).__name__}")
        problems.raise_if_any()
    for key in ext:
        if key not in EXTENSION_FIELDS:
            problems.add([str(key)], f"unknown field {key!r}")
    raw_nodes = ext.get("nodes", [])
    new: list[NodeId] = []
    if raw_nodes != []:
        new = _parse_nodes(raw_nodes, problems, limits) or []
    mapping: dict[NodeId, int] = base.id_to_index
    id_kind = type(base.node_ids[0])
    for i, nid in enumerate(new):
        if not isinstance(nid, id_kind):
            problems.add(
                ["nodes", i],
                f"node id {_fmt(nid)} is not a {id_kind.__name__} like the graph's ids",
            )
        elif nid in mapping:
            problems.add(["nodes", i], f"node {_fmt(nid)} already exists in the graph")
        else:
            mapping.setdefault(nid, len(mapping))
    parsed = _parse_edges(ext.get("edges", []), mapping, problems, limits)
    features = None
    if new and base.features is None:
        problems.add(["features"], "the graph has no features, so new nodes cannot be scored")
    elif new and "features" not in ext:
        problems.add(["features"], "new nodes need feature rows")
    elif new:
        features = _parse_matrix(ext["features"], "features", len(new), problems, limits)
        if features is not None and base.features is not None:
            if features.shape[1] != base.features.shape[1]:
                problems.add(
                    ["features"],
                    f"rows have {features.shape[1]} values, the graph has {base.features.shape[1]}",
                )
    elif ext.get("features"):
        problems.add(["features"], "features given but no new nodes")
    if parsed is not None and policy.self_loops == "error":
        edges, ok = parsed
        for k in np.flatnonzero(ok & (edges[0] == edges[1])):
            problems.add(["edges", int(k)], "edge is a self-loop (policy: error)")
    problems.raise_if_any()
    assert parsed is not None  # a None parse always adds a problem, raised above
    edges, ok = parsed
    n_new = len(new)
    x = base.features
    if x is not None and n_new:
        assert features is not None
        x = np.concatenate([x, features.astype(np.float32)])
    y = base.labels
    if y is not None:
        y = np.concatenate([y, np.full(n_new, -1, dtype=np.int64)])
    splits = {
        k: np.concatenate([m, np.zeros(n_new, dtype=np.bool_)]) for k, m in base.splits.items()
    }
    return _finish(
        base.node_ids + tuple(new),
        np.concatenate([base.edge_index, edges], axis=1),
        directed=base.directed,
        features=x,
        labels=(y, base.label_names) if y is not None else None,
        edge_features=None,  # extensions carry no edge features; the models here use none
        splits=splits,
        policy=GraphPolicy(self_loops="keep", duplicate_edges="merge"),
        limits=limits,
        problems=problems,
    )
