"""Read a table input (inline JSON records, or Parquet / CSV / JSON lines bytes) into columns.

Every form ends as ``{column: [cell, ...]}`` with JSON scalars and None for missing cells,
which :func:`open_autoglm.spec.table.validate_table` then checks against the schema. Files are
read with pandas (the ``ml`` extra), imported only when a file is read.
"""

from __future__ import annotations

import enum
import io
import math
from collections.abc import Callable
from typing import Any

from open_autoglm.errors import ValidationError

__all__ = ["TableFormat", "read_table_bytes", "resolve_table_input", "rows_to_columns"]

TABLE_FORMS = '{"rows": [{...}, ...]} or {"artifact": id, "format": "parquet" | "csv" | "jsonl"}'


class TableFormat(enum.StrEnum):
    PARQUET = "parquet"
    CSV = "csv"
    JSONL = "jsonl"


def _sniff(data: bytes) -> TableFormat:
    if data[:4] == b"PAR1":
        return TableFormat.PARQUET
    return TableFormat.JSONL if data.lstrip()[:1] == b"{" else TableFormat.CSV


def _scalar(value: Any) -> Any:
    """A pandas/numpy cell as a JSON scalar; NaN and NA as None."""
    if value is None:
        return None
    if hasattr(value, "item"):  # numpy scalar
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    try:
        import pandas as pd

        if value is pd.NA or value is pd.NaT:
            return None
    except ImportError:  # pragma: no cover - pandas is part of the ml extra
        pass
    return value


def read_table_bytes(data: bytes, fmt: TableFormat | str | None = None) -> dict[str, list[Any]]:
    """Columns of a Parquet, CSV or JSON lines file (the format sniffed when not given)."""
    import pandas as pd

    kind = TableFormat(fmt) if fmt else _sniff(data)
    try:
        if kind is TableFormat.PARQUET:
            frame = pd.read_parquet(io.BytesIO(data))
        elif kind is TableFormat.CSV:
            frame = pd.read_csv(io.BytesIO(data))
        else:
            frame = pd.read_json(io.BytesIO(data), lines=True, dtype=False)
    except Exception as exc:  # any reader error is the file's fault, said in the answer
        raise ValidationError(
            f"table artifact is not readable as {kind.value}",
            details=[{"loc": ["input", "artifact"], "msg": f"{type(exc).__name__}: {exc}"}],
        ) from None
    return {str(name): [_scalar(v) for v in frame[name].tolist()] for name in frame.columns}


def rows_to_columns(rows: Any, loc: list[str | int]) -> dict[str, list[Any]]:
    """JSON records to columns; a key absent from a row is a missing cell there."""
    if not isinstance(rows, list):
        raise ValidationError(
            "table rows must be a list of objects",
            details=[{"loc": loc, "msg": f"expected a list, got {type(rows).__name__}"}],
        )
    bad = [i for i, r in enumerate(rows) if not isinstance(r, dict)]
    if bad:
        raise ValidationError(
            "table rows must be objects",
            details=[{"loc": [*loc, i], "msg": "expected an object"} for i in bad[:20]],
        )
    names: dict[str, None] = {}
    for row in rows:
        names.update(dict.fromkeys(row))
    nested = [
        [*loc, i, k] for i, r in enumerate(rows) for k, v in r.items() if isinstance(v, dict | list)
    ]
    if nested:
        raise ValidationError(
            "table cells must be scalars",
            details=[
                {"loc": where, "msg": "expected a string, number, boolean or null"}
                for where in nested[:20]
            ],
        )
    return {name: [r.get(name) for r in rows] for name in names}


def resolve_table_input(raw: Any, load_artifact: Callable[[str], bytes]) -> dict[str, list[Any]]:
    """The columns of a task's table input, inline or from an artifact."""
    if isinstance(raw, dict) and set(raw) == {"rows"}:
        return rows_to_columns(raw["rows"], ["input", "rows"])
    if isinstance(raw, dict) and "artifact" in raw and set(raw) <= {"artifact", "format"}:
        fmt = raw.get("format")
        if fmt is not None and fmt not in {f.value for f in TableFormat}:
            raise ValidationError(
                f"unknown table format {fmt!r}",
                details=[
                    {
                        "loc": ["input", "format"],
                        "msg": f"expected one of {[f.value for f in TableFormat]}",
                    }
                ],
            )
        return read_table_bytes(load_artifact(str(raw["artifact"])), fmt)
    if isinstance(raw, str):  # a JSON-lines body given inline as text
        return read_table_bytes(raw.encode("utf-8"), TableFormat.JSONL)
    raise ValidationError(
        "unrecognised table input",
        details=[{"loc": ["input"], "msg": f"expected {TABLE_FORMS}"}],
    )
