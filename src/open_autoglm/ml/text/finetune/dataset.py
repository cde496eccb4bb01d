"""Check a table's text and label columns and turn them into label ids, listing every problem.

A training run on a bad table costs minutes and then fails on the first bad row, so the
whole table is checked first and every problem is reported at once, each with the field it
is about (``loc``), as one :class:`~open_autoglm.errors.ValidationError`.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from open_autoglm.errors import ValidationError

__all__ = ["LabeledTexts", "SplitName", "build_dataset", "label_order"]

# Row numbers shown per problem; the count says how many there are in all.
_SHOWN = 10


class SplitName(enum.StrEnum):
    """The part of the data a row belongs to."""

    TRAIN = "train"
    VALIDATION = "validation"
    TEST = "test"


@dataclass(frozen=True)
class LabeledTexts:
    """Valid rows: texts, label ids into ``label_names``, and each row's given split (or None)."""

    texts: list[str]
    labels: list[int]
    label_names: list[str]
    splits: list[SplitName] | None = None

    def __len__(self) -> int:
        return len(self.texts)


def label_order(values: Sequence[Any]) -> list[str]:
    """Label names in a stable order: numbers numerically, then strings alphabetically."""
    distinct = set(values)
    numbers = sorted(v for v in distinct if isinstance(v, int | float) and not isinstance(v, bool))
    rest = sorted(str(v) for v in distinct if v not in set(numbers))
    return list(dict.fromkeys([_name(v) for v in numbers] + rest))


def _name(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # CSV readers turn an int column with a gap into floats
    return str(value)


def _rows(indices: list[int]) -> str:
    shown = ", ".join(str(i) for i in indices[:_SHOWN])
    more = f" and {len(indices) - _SHOWN} more" if len(indices) > _SHOWN else ""
    return f"rows {shown}{more}" if len(indices) > 1 else f"row {shown}"


def build_dataset(
    columns: Mapping[str, Sequence[Any]],
    *,
    text_column: str,
    label_column: str,
    labels: Sequence[str] | None = None,
    split_column: str | None = None,
    min_per_class: int = 3,
) -> LabeledTexts:
    """Validate ``columns`` (``{name: cells}``) and return the labeled texts.

    Args:
        columns: the table, as :func:`~open_autoglm.spec.table_loaders.resolve_table_input`
            returns it.
        labels: the label names in the order the model's outputs take; every label in the
            table must be one of them. Default: :func:`label_order` of the table's labels.
        split_column: a column naming each row's split (train, validation or test).
        min_per_class: the fewest rows a class may have (a stratified split puts at least one
            in each part).

    Raises:
        ValidationError: listing every problem found, each with its ``loc``.
    """
    problems: list[dict[str, Any]] = []

    def problem(loc: list[str | int], msg: str) -> None:
        problems.append({"loc": loc, "msg": msg})

    known = list(columns)
    wanted = [("text_column", text_column), ("label_column", label_column)]
    if split_column is not None:
        wanted.append(("split", split_column))
    absent_columns = [(field, name) for field, name in wanted if name not in columns]
    for field, name in absent_columns:
        problem(["params", field], f"column {name!r} is not in the table (columns: {known[:20]})")
    if labels is not None:
        dupes = sorted(n for n, c in Counter(labels).items() if c > 1)
        if dupes:
            problem(["params", "labels"], f"labels listed more than once: {dupes}")
    n_rows = len(next(iter(columns.values()), []))
    if n_rows == 0:
        problem(["input"], "the table has no rows")
    if absent_columns or n_rows == 0:  # nothing below can be checked
        raise ValidationError(f"text-classifier-train: {problems[0]['msg']}", details=problems)

    texts_raw = list(columns[text_column])
    labels_raw = list(columns[label_column])
    not_text = [i for i, t in enumerate(texts_raw) if t is not None and not isinstance(t, str)]
    empty = [
        i for i, t in enumerate(texts_raw) if t is None or (isinstance(t, str) and not t.strip())
    ]
    if not_text:
        problem(["input", text_column], f"{_rows(not_text)}: text cells must be strings")
    if empty:
        problem(["input", text_column], f"{_rows(empty)}: empty text")
    missing = [i for i, v in enumerate(labels_raw) if v is None]
    if missing:
        problem(["input", label_column], f"{_rows(missing)}: missing label")
    nested = [i for i, v in enumerate(labels_raw) if isinstance(v, dict | list)]
    if nested:
        problem(["input", label_column], f"{_rows(nested)}: a label is a string or a number")
    present = [v for v in labels_raw if v is not None and not isinstance(v, dict | list)]
    names = list(labels) if labels is not None else label_order(present)
    index = {name: i for i, name in enumerate(names)}
    unknown = sorted({_name(v) for v in present} - set(index))
    if unknown:
        problem(
            ["input", label_column],
            f"labels not in params.labels: {unknown[:_SHOWN]}"
            + (f" and {len(unknown) - _SHOWN} more" if len(unknown) > _SHOWN else ""),
        )
    if len(names) < 2:
        problem(["input", label_column], f"a classifier needs at least two labels, found {names}")

    splits: list[SplitName] | None = None
    if split_column is not None:
        allowed = {s.value for s in SplitName}
        cells = list(columns[split_column])
        bad = [i for i, s in enumerate(cells) if s not in allowed]
        if bad:
            problem(
                ["input", split_column],
                f"{_rows(bad)}: split must be one of {sorted(allowed)}",
            )
        else:
            splits = [SplitName(s) for s in cells]

    # Counted over the rows that would train: too few of a class is only meaningful then.
    counts = Counter(_name(v) for v in present if _name(v) in index)
    if split_column is None:
        thin = [n for n in names if counts[n] < min_per_class]
        if thin:
            problem(
                ["input", label_column],
                f"too few rows for labels {[(n, counts[n]) for n in thin]}: each needs at "
                f"least {min_per_class} for a stratified train/validation/test split",
            )
    elif splits is not None:
        for part in (SplitName.TRAIN, SplitName.VALIDATION):
            if not any(s is part for s in splits):
                problem(["input", split_column], f"no {part.value} rows")
        in_train = Counter(
            _name(v) for v, s in zip(labels_raw, splits, strict=True) if s is SplitName.TRAIN
        )
        absent = [n for n in names if not in_train[n]]
        if absent:
            problem(["input", label_column], f"labels with no train rows: {absent[:_SHOWN]}")
    if problems:
        raise ValidationError(
            f"text-classifier-train: {len(problems)} problem(s) in the data; first: "
            f"{problems[0]['msg']}",
            details=problems,
        )
    return LabeledTexts(
        texts=[str(t) for t in texts_raw],
        labels=[index[_name(v)] for v in labels_raw],
        label_names=names,
        splits=splits,
    )
