"""Table inputs: a declared schema (text, categorical, numeric columns and a label) and the
validation of rows against it.

A table arrives as JSON records (``{"rows": [{...}, ...]}``) or as a Parquet, CSV or JSON
lines artifact (:mod:`open_autoglm.spec.table_loaders` turns those into the same columns).
:func:`validate_table` checks every declared column and collects every problem (a missing
column, a value of the wrong type, a label with one class, text columns with no text at all,
missing numbers without an imputation policy, size limits) before raising them together as
one :class:`~open_autoglm.errors.ValidationError`, each with a ``loc``
(``["input", "rows", 17, "Age"]``).

Missing values per row follow :class:`MissingPolicy`: a row without text has its text
modality masked, a missing category becomes the "unknown" category, a missing number is
imputed (or rejected, the default). A row left with neither text nor any tabular value is
kept, with both modalities masked, so predictions never crash on sparse rows.

This module needs pydantic only (no numpy, pandas or torch).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from open_autoglm.errors import ErrorDetail, ValidationError

__all__ = [
    "CategoryPolicy",
    "ColumnRole",
    "MissingPolicy",
    "NumericPolicy",
    "TableData",
    "TableLimits",
    "TableSchema",
    "TextPolicy",
    "join_text",
    "label_key",
    "validate_table",
]

Cell = Any  # a JSON scalar: str, int, float, bool or None


class ColumnRole(enum.StrEnum):
    TEXT = "text"
    CATEGORICAL = "categorical"
    NUMERIC = "numeric"
    LABEL = "label"


class TextPolicy(enum.StrEnum):
    """A row with no text: mask the text modality for it, or reject the table."""

    MASK = "mask"
    ERROR = "error"


class CategoryPolicy(enum.StrEnum):
    """A missing category: its own "unknown" value, or reject the table."""

    UNKNOWN = "unknown"
    ERROR = "error"


class NumericPolicy(enum.StrEnum):
    """A missing number: reject (the default), or impute from the training rows."""

    ERROR = "error"
    MEAN = "mean"
    MEDIAN = "median"
    ZERO = "zero"


class MissingPolicy(BaseModel):
    """What a missing value in a row becomes, per kind of column."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    text: TextPolicy = TextPolicy.MASK
    categorical: CategoryPolicy = CategoryPolicy.UNKNOWN
    numeric: NumericPolicy = NumericPolicy.ERROR


class TableLimits(BaseModel):
    """Size limits; a table past one is rejected before the per-cell checks run."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_rows: int = Field(default=200_000, ge=1)
    max_columns: int = Field(default=256, ge=1)
    max_text_chars: int = Field(default=20_000, ge=1)
    max_categories: int = Field(default=10_000, ge=1)
    max_problems: int = Field(default=100, ge=1)


class TableSchema(BaseModel):
    """Which columns are text, categorical, numeric, and which one is the label."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    text: list[str] = Field(default_factory=list, max_length=64)
    categorical: list[str] = Field(default_factory=list, max_length=256)
    numeric: list[str] = Field(default_factory=list, max_length=256)
    label: str = Field(min_length=1, max_length=200)
    missing: MissingPolicy = Field(default_factory=MissingPolicy)

    @model_validator(mode="after")
    def _roles_are_disjoint(self) -> TableSchema:
        seen: dict[str, str] = {self.label: ColumnRole.LABEL.value}
        problems = []
        for role, names in self.roles().items():
            for name in names:
                if name in seen:
                    problems.append(f"column {name!r} is both {seen[name]} and {role.value}")
                seen[name] = role.value
        if not self.text and not self.categorical and not self.numeric:
            problems.append("declare at least one text, categorical or numeric column")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def roles(self) -> dict[ColumnRole, list[str]]:
        """Input columns by role (the label excluded)."""
        return {
            ColumnRole.TEXT: self.text,
            ColumnRole.CATEGORICAL: self.categorical,
            ColumnRole.NUMERIC: self.numeric,
        }

    def columns(self, *, label: bool = True) -> list[str]:
        out = [*self.text, *self.categorical, *self.numeric]
        return [*out, self.label] if label else out


def join_text(parts: Sequence[Cell]) -> str:
    """A row's text: its non-empty text cells, stripped, one per line."""
    return "\n".join(p.strip() for p in parts if isinstance(p, str) and p.strip())


def label_key(value: Cell) -> tuple[str, str]:
    """Sort key for label values of mixed JSON types (ints before strings, each in order)."""
    if isinstance(value, bool):
        return ("bool", str(int(value)))
    if isinstance(value, int):
        return ("int", f"{value:+021d}")
    return (type(value).__name__, str(value))


@dataclass(frozen=True)
class TableData:
    """A validated table: text already joined per row, cells typed, missing values as None.

    ``texts[i]`` is row i's text ("" when it has none); ``categorical[c][i]`` a string or
    None; ``numeric[c][i]`` a float or None (left None only under an imputation policy);
    ``labels`` is None for a table without its label (prediction).
    """

    schema: TableSchema
    texts: tuple[str, ...]
    categorical: Mapping[str, tuple[str | None, ...]]
    numeric: Mapping[str, tuple[float | None, ...]]
    labels: tuple[Cell, ...] | None
    notes: tuple[ErrorDetail, ...] = field(default=())

    @property
    def num_rows(self) -> int:
        return len(self.texts)

    def classes(self) -> list[Cell]:
        """Distinct label values in a stable order."""
        return sorted(set(self.labels or ()), key=label_key)

    def subset(self, rows: Sequence[int]) -> TableData:
        """The table restricted to ``rows`` (in that order)."""
        return TableData(
            schema=self.schema,
            texts=tuple(self.texts[i] for i in rows),
            categorical={k: tuple(v[i] for i in rows) for k, v in self.categorical.items()},
            numeric={k: tuple(v[i] for i in rows) for k, v in self.numeric.items()},
            labels=None if self.labels is None else tuple(self.labels[i] for i in rows),
            notes=self.notes,
        )


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

    def raise_if_any(self) -> None:
        if not self.total:
            return
        details = list(self.items)
        if self.total > len(details):
            details.append({"loc": [], "msg": f"... and {self.total - len(details)} more"})
        noun = "problem" if self.total == 1 else "problems"
        raise ValidationError(f"invalid table: {self.total} {noun}", details=details)


def _missing(value: Cell) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _rows_note(rows: list[int], limit: int = 5) -> str:
    shown = ", ".join(str(r) for r in rows[:limit])
    return f"rows {shown}" + (f" and {len(rows) - limit} more" if len(rows) > limit else "")


def _text_column(
    name: str, cells: Sequence[Cell], loc: list[str | int], limits: TableLimits, p: _Problems
) -> None:
    wrong = [i for i, v in enumerate(cells) if not _missing(v) and not isinstance(v, str)]
    if wrong:
        p.add([*loc, name], f"text column holds non-text values ({_rows_note(wrong)})")
    long = [i for i, v in enumerate(cells) if isinstance(v, str) and len(v) > limits.max_text_chars]
    if long:
        p.add(
            [*loc, name],
            f"text longer than {limits.max_text_chars} characters ({_rows_note(long)})",
        )


def _categorical_column(
    name: str, cells: Sequence[Cell], loc: list[str | int], limits: TableLimits, p: _Problems
) -> tuple[str | None, ...]:
    out: list[str | None] = []
    wrong: list[int] = []
    for i, v in enumerate(cells):
        if _missing(v):
            out.append(None)
        elif isinstance(v, str | int | bool) and not (isinstance(v, str) and not v.strip()):
            out.append(str(v))
        elif isinstance(v, str):
            out.append(None)  # a blank category is a missing one
        else:
            wrong.append(i)
            out.append(None)
    if wrong:
        p.add([*loc, name], f"categories must be strings or integers ({_rows_note(wrong)})")
    distinct = len({v for v in out if v is not None})
    if distinct > limits.max_categories:
        p.add([*loc, name], f"{distinct} categories exceeds the limit of {limits.max_categories}")
    return tuple(out)


def _numeric_column(
    name: str, cells: Sequence[Cell], loc: list[str | int], p: _Problems
) -> tuple[float | None, ...]:
    out: list[float | None] = []
    wrong: list[int] = []
    infinite: list[int] = []
    for i, v in enumerate(cells):
        if isinstance(v, str):  # CSV hands a column with one bad cell over as text
            v = _number(v)
        if _missing(v):
            out.append(None)
        elif isinstance(v, bool) or not isinstance(v, int | float):
            wrong.append(i)
            out.append(None)
        elif not math.isfinite(v):
            infinite.append(i)
            out.append(None)
        else:
            out.append(float(v))
    if wrong:
        p.add([*loc, name], f"numeric column holds non-numbers ({_rows_note(wrong)})")
    if infinite:
        p.add([*loc, name], f"numeric column holds infinities ({_rows_note(infinite)})")
    return tuple(out)


def _number(text: str) -> Cell:
    """A numeric string as its number; a blank one as missing; anything else unchanged."""
    if not text.strip():
        return None
    try:
        return float(text)
    except ValueError:
        return text


def validate_table(
    columns: Mapping[str, Sequence[Cell]],
    schema: TableSchema,
    *,
    require_label: bool = True,
    limits: TableLimits | None = None,
    loc: Sequence[str | int] = ("input",),
) -> TableData:
    """Check ``columns`` (name -> cells, all of one length) against ``schema``.

    Args:
        columns: the table column-wise; cells are JSON scalars, None (or NaN) when missing.
        schema: the declared roles and the missing-value policy.
        require_label: training needs the label (two classes at least); prediction does not.
        limits: size limits.
        loc: where the table sits in the request, prefixed to every problem's ``loc``.

    Raises:
        ValidationError: with every problem found.
    """
    limits = limits or TableLimits()
    p = _Problems(limits.max_problems)
    base = list(loc)
    lengths = {len(v) for v in columns.values()}
    rows = max(lengths, default=0)
    if len(lengths) > 1:
        p.add(base, f"columns have different lengths: {sorted(lengths)}")
    if rows == 0:
        p.add(base, "the table has no rows")
    if rows > limits.max_rows:
        p.add(base, f"{rows} rows exceeds the limit of {limits.max_rows}")
    if len(columns) > limits.max_columns:
        p.add(base, f"{len(columns)} columns exceeds the limit of {limits.max_columns}")
    if p.total:  # the per-column checks below need one row count
        p.raise_if_any()
    for name in schema.columns(label=require_label):
        if name not in columns:
            p.add([*base, name], f"declared column {name!r} is missing from the table")
    # A missing column was reported; the checks go on over an empty one so that every other
    # problem is reported in the same answer.
    absent: list[Cell] = [None] * rows
    columns = {n: columns.get(n, absent) for n in schema.columns(label=require_label)}

    policy = schema.missing
    for name in schema.text:
        _text_column(name, columns[name], base, limits, p)
    texts = tuple(
        join_text(parts) for parts in zip(*(columns[n] for n in schema.text), strict=False)
    )
    if not schema.text:
        texts = ("",) * rows
    if schema.text:
        empty = [i for i, t in enumerate(texts) if not t]
        if len(empty) == rows:
            p.add([*base, *schema.text[:1]], "every text cell is empty")
        elif empty and policy.text is TextPolicy.ERROR:
            p.add([*base, schema.text[0]], f"rows without text ({_rows_note(empty)})")
    categorical = {
        n: _categorical_column(n, columns[n], base, limits, p) for n in schema.categorical
    }
    if policy.categorical is CategoryPolicy.ERROR:
        for name, cells in categorical.items():
            if columns[name] is absent:
                continue
            gaps = [i for i, v in enumerate(cells) if v is None]
            if gaps:
                p.add([*base, name], f"missing categories ({_rows_note(gaps)})")
    numeric = {n: _numeric_column(n, columns[n], base, p) for n in schema.numeric}
    for name, values in numeric.items():
        raw = columns[name]
        gaps = [i for i, v in enumerate(values) if v is None and not _bad_cell(raw[i])]
        if columns[name] is absent:
            continue
        if gaps and policy.numeric is NumericPolicy.ERROR:
            p.add(
                [*base, name],
                f"missing numbers ({_rows_note(gaps)}) and no imputation policy "
                "(set schema.missing.numeric to mean, median or zero)",
            )
        if gaps and len(gaps) == rows and policy.numeric is not NumericPolicy.ERROR:
            p.add([*base, name], "every value is missing: nothing to impute from")
    labels = None
    if require_label and columns[schema.label] is not absent:
        labels = _labels(columns[schema.label], [*base, schema.label], p)
    p.raise_if_any()
    return TableData(
        schema=schema, texts=texts, categorical=categorical, numeric=numeric, labels=labels
    )


def _bad_cell(value: Cell) -> bool:
    """A present cell of the wrong type (already reported; not also a missing number)."""
    if isinstance(value, str):
        value = _number(value)
    return not _missing(value) and (isinstance(value, bool) or not isinstance(value, int | float))


def _labels(cells: Sequence[Cell], loc: list[str | int], p: _Problems) -> tuple[Cell, ...]:
    missing = [i for i, v in enumerate(cells) if _missing(v)]
    if missing:
        p.add(loc, f"missing labels ({_rows_note(missing)})")
    wrong = [
        i
        for i, v in enumerate(cells)
        if not _missing(v)
        and ((isinstance(v, float) and not v.is_integer()) or not isinstance(v, str | int | float))
    ]
    if wrong:
        p.add(loc, f"labels must be strings or integers ({_rows_note(wrong)})")
    # 1.0 and 1 are one class: a CSV or Parquet reader may hand integers over as floats.
    labels = tuple(int(v) if isinstance(v, float) and v.is_integer() else v for v in cells)
    distinct = {v for v in labels if not _missing(v)}
    if len(distinct) < 2 and not missing:
        p.add(loc, f"the label needs at least two classes, found {len(distinct)}")
    return labels
