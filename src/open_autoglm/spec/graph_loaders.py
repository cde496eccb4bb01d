"""Graph file loaders: JSON, CSV edge lists with node tables, and ``.npz`` arrays.

Each loader only reads and reshapes; all checking happens in :mod:`open_autoglm.spec.graph`.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt

from open_autoglm.errors import ValidationError
from open_autoglm.spec.graph import (
    GraphData,
    GraphLimits,
    GraphPolicy,
    NodeId,
    parse_graph,
    validate_graph_arrays,
)

__all__ = ["load_graph", "load_graph_csv", "load_graph_json", "load_graph_npz"]

_SPLITS = ("train", "val", "test")


def load_graph_json(
    path: str | Path, *, policy: GraphPolicy | None = None, limits: GraphLimits | None = None
) -> GraphData:
    """Read and validate a JSON graph file; malformed JSON is a ValidationError too."""
    try:
        obj = json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValidationError(
            f"{path} is not valid JSON", details=[{"loc": [], "msg": str(exc)}]
        ) from None
    return parse_graph(obj, policy=policy, limits=limits)


def _coerce_id(text: str) -> NodeId:
    """CSV cells are text; an id that is a plain integer becomes an int."""
    stripped = text.strip()
    if stripped.lstrip("-").isdigit() and len(stripped) < 19:
        return int(stripped)
    return stripped


def load_graph_csv(
    edges_path: str | Path,
    nodes_path: str | Path | None = None,
    *,
    src: str = "src",
    dst: str = "dst",
    node_id: str = "id",
    label: str = "label",
    directed: bool = False,
    policy: GraphPolicy | None = None,
    limits: GraphLimits | None = None,
) -> GraphData:
    """Load an edge list CSV (extra columns become edge features) and an optional node table.

    The node table has an id column, an optional label column, and feature columns. Without
    it, nodes are the edge endpoints in order of first appearance.
    """
    obj: dict[str, Any] = {"directed": directed}
    with open(edges_path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if rows and (src not in rows[0] or dst not in rows[0]):
        raise ValidationError(
            f"edge list needs columns {src!r} and {dst!r}",
            details=[{"loc": ["edges"], "msg": f"columns are {list(rows[0])}"}],
        )
    obj["edges"] = [[_coerce_id(r[src]), _coerce_id(r[dst])] for r in rows]
    extra = [c for c in (rows[0] if rows else {}) if c not in (src, dst)]
    if extra:
        obj["edge_features"] = [[_number(r[c]) for c in extra] for r in rows]
    if nodes_path is None:
        order = dict.fromkeys(e for pair in obj["edges"] for e in pair)
        obj["nodes"] = list(order)
    else:
        with open(nodes_path, newline="", encoding="utf-8") as fh:
            nrows = list(csv.DictReader(fh))
        if nrows and node_id not in nrows[0]:
            raise ValidationError(
                f"node table needs an {node_id!r} column",
                details=[{"loc": ["nodes"], "msg": f"columns are {list(nrows[0])}"}],
            )
        obj["nodes"] = [_coerce_id(r[node_id]) for r in nrows]
        if nrows and label in nrows[0]:
            obj["labels"] = [_coerce_id(r[label]) if r[label].strip() else None for r in nrows]
        cols = [c for c in (nrows[0] if nrows else {}) if c not in (node_id, label)]
        if cols:
            obj["features"] = [[_number(r[c]) for c in cols] for r in nrows]
    return parse_graph(obj, policy=policy, limits=limits)


def _number(text: str | None) -> float | str | None:
    """Parse a CSV cell as a float; leave anything else for the validator to name."""
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        return text


def load_graph_npz(
    path: str | Path | BinaryIO,
    *,
    directed: bool | None = None,
    policy: GraphPolicy | None = None,
    limits: GraphLimits | None = None,
) -> GraphData:
    """Load an ``.npz`` graph (``edge_index``; ``x`` dense or CSR ``x_data/x_indices/...``).

    Optional arrays: ``y``, ``node_ids``, ``label_names``, ``{train,val,test}_mask`` and a
    scalar ``directed`` (used when the ``directed`` argument is None; default undirected). Unless
    the policy says otherwise, duplicates merge, so files that list undirected edges both ways
    (as Planetoid does) load as one edge each.
    """
    policy = (policy or GraphPolicy()).resolved("merge")
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    if "edge_index" not in arrays:
        raise ValidationError(
            f"{path} has no edge_index", details=[{"loc": ["edges"], "msg": "field required"}]
        )
    x: npt.NDArray[Any] | None = arrays.get("x")
    if x is None and "x_data" in arrays:
        rows, cols = (int(v) for v in arrays["x_shape"])
        x = np.zeros((rows, cols), dtype=np.float32)
        indptr = arrays["x_indptr"]
        row_of = np.repeat(np.arange(rows), np.diff(indptr))  # (nnz,)
        x[row_of, arrays["x_indices"]] = arrays["x_data"]
    y = arrays.get("y")
    if directed is None:
        directed = bool(arrays["directed"]) if "directed" in arrays else False
    if "node_ids" in arrays:
        ids: Sequence[NodeId] | int = [
            v.item() if isinstance(v, np.generic) else v for v in arrays["node_ids"].tolist()
        ]
    else:
        ids = int(x.shape[0] if x is not None else (len(y) if y is not None else 0))
        if ids == 0 and arrays["edge_index"].size:
            ids = int(arrays["edge_index"].max()) + 1
    names = arrays["label_names"].tolist() if "label_names" in arrays else None
    splits = {s: arrays[f"{s}_mask"] for s in _SPLITS if f"{s}_mask" in arrays}
    return validate_graph_arrays(
        ids, arrays["edge_index"], directed=directed, features=x, labels=y,
        label_names=names, splits=splits, policy=policy, limits=limits,
    )  # fmt: skip


def load_graph(
    path: str | Path, *, policy: GraphPolicy | None = None, limits: GraphLimits | None = None
) -> GraphData:
    """Load a graph file by extension: ``.json``, ``.npz`` or ``.csv`` (an edge list)."""
    suffix = Path(path).suffix.lower()
    if suffix == ".npz":
        return load_graph_npz(path, policy=policy, limits=limits)
    if suffix == ".csv":
        return load_graph_csv(path, policy=policy, limits=limits)
    return load_graph_json(path, policy=policy, limits=limits)
