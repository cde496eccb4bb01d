"""Event-stream file loaders: JSON, CSV/whitespace text, Parquet and ``.npz``.

Each loader only reads and names columns; all checking happens in
:mod:`open_autoglm.spec.events`. Tabular files find their columns by name (``src``/``source``,
``dst``/``target``, ``t``/``time``/``timestamp``, ``label``); every other column is an edge
feature. A text file without a header row is read as ``src dst t [features...]``, the layout
of the SNAP and JODIE releases.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from open_autoglm.errors import ValidationError
from open_autoglm.spec.events import (
    EventLimits,
    EventPolicy,
    EventStream,
    parse_events,
    validate_event_arrays,
)

__all__ = [
    "COLUMN_NAMES",
    "load_events",
    "load_events_json",
    "load_events_npz",
    "load_events_parquet",
    "load_events_table",
    "load_events_text",
]

# The header names each role answers to (case-insensitive), first match wins.
COLUMN_NAMES: dict[str, tuple[str, ...]] = {
    "src": ("src", "source", "u", "user", "user_id", "from"),
    "dst": ("dst", "target", "destination", "i", "item", "item_id", "to"),
    "t": ("t", "ts", "time", "timestamp"),
    "label": ("label", "state_label", "y"),
}


def load_events_json(
    path: str | Path, *, policy: EventPolicy | None = None, limits: EventLimits | None = None
) -> EventStream:
    """Read and validate a JSON stream file; malformed JSON is a ValidationError too."""
    try:
        obj = json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValidationError(
            f"{path} is not valid JSON", details=[{"loc": [], "msg": str(exc)}]
        ) from None
    return parse_events(obj, policy=policy, limits=limits)


def _pick(columns: list[str], role: str) -> str | None:
    lower = {c.strip().lower(): c for c in columns}
    return next((lower[n] for n in COLUMN_NAMES[role] if n in lower), None)


def load_events_table(
    frame: Any, *, policy: EventPolicy | None = None, limits: EventLimits | None = None
) -> EventStream:
    """Validate a pandas DataFrame whose columns are named as :data:`COLUMN_NAMES` says."""
    columns = [str(c) for c in frame.columns]
    frame.columns = columns
    picked = {role: _pick(columns, role) for role in COLUMN_NAMES}
    missing = [r for r in ("src", "dst", "t") if picked[r] is None]
    if missing:
        raise ValidationError(
            f"event table needs columns for {', '.join(missing)}",
            details=[
                {
                    "loc": ["columns", r],
                    "msg": f"none of {list(COLUMN_NAMES[r])}; columns are {columns}",
                }
                for r in missing
            ],
        )
    used = {c for c in picked.values() if c is not None}
    rest = [c for c in columns if c not in used]
    features = None
    if rest:
        import pandas as pd

        numeric = frame[rest].apply(pd.to_numeric, errors="coerce")
        bad = numeric.isna() & frame[rest].notna() & ~frame[rest].astype(str).isin(["nan", "NaN"])
        if bad.to_numpy().any():
            rows, cols = np.nonzero(bad.to_numpy())
            raise ValidationError(
                f"{len(rows)} edge feature value(s) are not numbers",
                details=[
                    {
                        "loc": ["edge_features", int(r), rest[c]],
                        "msg": f"value must be a number, got {frame[rest[c]].iloc[r]!r}",
                    }
                    for r, c in zip(rows[:100], cols[:100], strict=True)
                ],
            )
        features = numeric.to_numpy(dtype=np.float64)
    labels = None
    if picked["label"] is not None:
        import pandas as pd

        labels = pd.to_numeric(frame[picked["label"]], errors="coerce").to_numpy(dtype=np.float64)
    return validate_event_arrays(
        _column(frame[picked["src"]]),
        _column(frame[picked["dst"]]),
        frame[picked["t"]].to_numpy(),
        edge_features=features,
        labels=labels,
        policy=policy,
        limits=limits,
    )


def _column(series: Any) -> np.ndarray[Any, Any]:
    """Node ids: integers when every cell is one, text otherwise."""
    values: np.ndarray[Any, Any] = series.to_numpy()
    return values.astype(np.int64 if np.issubdtype(values.dtype, np.integer) else str)


def load_events_text(
    path: str | Path | BinaryIO,
    *,
    sep: str | None = None,
    policy: EventPolicy | None = None,
    limits: EventLimits | None = None,
) -> EventStream:
    """Load a CSV (``sep=","``) or whitespace-separated text stream, with or without header.

    A first line with a recognised ``src``/``dst``/``t`` name is a header; otherwise the
    columns are ``src dst t [features...]``.
    """
    import pandas as pd

    raw = path.read() if hasattr(path, "read") else Path(path).read_bytes()
    if isinstance(raw, str):
        raw = raw.encode("utf-8")
    first = raw.split(b"\n", 1)[0].decode("utf-8", errors="replace")
    if sep is None:
        sep = "," if "," in first else r"\s+"
    cells = [c for c in (first.split(",") if sep == "," else first.split()) if c]
    has_header = any(_pick([c], role) for c in cells for role in ("src", "dst", "t"))
    try:
        frame = pd.read_csv(
            io.BytesIO(raw), sep=sep, header=0 if has_header else None, engine="c",
        )  # fmt: skip
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ValidationError(
            "event file is not a well-formed table", details=[{"loc": [], "msg": str(exc)}]
        ) from None
    if not has_header:
        if frame.shape[1] < 3:
            raise ValidationError(
                "event file needs at least three columns: src dst t",
                details=[{"loc": ["columns"], "msg": f"found {frame.shape[1]}"}],
            )
        frame.columns = ["src", "dst", "t"] + [f"f{k}" for k in range(frame.shape[1] - 3)]
    return load_events_table(frame, policy=policy, limits=limits)


def load_events_parquet(
    path: str | Path | BinaryIO,
    *,
    policy: EventPolicy | None = None,
    limits: EventLimits | None = None,
) -> EventStream:
    """Load a Parquet table with named columns (pandas + pyarrow)."""
    import pandas as pd

    try:
        frame = pd.read_parquet(path)
    except (OSError, ValueError) as exc:
        raise ValidationError(
            "event file is not readable Parquet", details=[{"loc": [], "msg": str(exc)}]
        ) from None
    return load_events_table(frame, policy=policy, limits=limits)


def load_events_npz(
    path: str | Path | BinaryIO,
    *,
    policy: EventPolicy | None = None,
    limits: EventLimits | None = None,
) -> EventStream:
    """Load arrays ``src``, ``dst``, ``t`` and optional ``edge_features``, ``labels``, ``node_ids``.

    With ``node_ids``, ``src``/``dst`` are user ids that must be among them.
    """
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    missing = [k for k in ("src", "dst", "t") if k not in arrays]
    if missing:
        raise ValidationError(
            f"npz stream lacks {', '.join(missing)}",
            details=[{"loc": [k], "msg": "field required"} for k in missing],
        )
    nodes = None
    if "node_ids" in arrays:
        nodes = [v.item() if isinstance(v, np.generic) else v for v in arrays["node_ids"].tolist()]
    return validate_event_arrays(
        arrays["src"], arrays["dst"], arrays["t"],
        edge_features=arrays.get("edge_features"), labels=arrays.get("labels"),
        nodes=nodes, policy=policy, limits=limits,
    )  # fmt: skip


def load_events(
    path: str | Path, *, policy: EventPolicy | None = None, limits: EventLimits | None = None
) -> EventStream:
    """Load a stream by extension: ``.json``, ``.npz``, ``.parquet``, else a text table."""
    suffix = Path(path).suffix.lower()
    if suffix == ".json":
        return load_events_json(path, policy=policy, limits=limits)
    if suffix == ".npz":
        return load_events_npz(path, policy=policy, limits=limits)
    if suffix in (".parquet", ".pq"):
        return load_events_parquet(path, policy=policy, limits=limits)
    return load_events_text(path, policy=policy, limits=limits)
