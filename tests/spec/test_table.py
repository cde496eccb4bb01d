"""Table inputs: every problem named with its location, missing values under a policy, and
Parquet, CSV and JSON lines read into the same table."""

from __future__ import annotations

import io
import math

import pytest

from open_autoglm.errors import ValidationError
from open_autoglm.spec.table import TableLimits, TableSchema, validate_table
from open_autoglm.spec.table_loaders import read_table_bytes, resolve_table_input

SCHEMA = TableSchema(text=["title", "body"], categorical=["dept"], numeric=["age"], label="y")


def columns(**overrides: list) -> dict[str, list]:
    base = {
        "title": ["Nice", None, "Bad"],
        "body": ["loved it", "fits well", None],
        "dept": ["Tops", None, 3],
        "age": [30, 41.5, 22],
        "y": [1, 0, 1],
    }
    return {**base, **overrides}


def problems(exc: pytest.ExceptionInfo[ValidationError]) -> list[tuple[list, str]]:
    return [(d["loc"], d["msg"]) for d in exc.value.details]


def test_valid_table_joins_text_and_masks_rows_without_any() -> None:
    table = validate_table(columns(title=[None, None, " "], body=["a", None, ""]), SCHEMA)
    assert table.texts == ("a", "", "")  # "" = text modality masked for that row
    assert table.categorical["dept"] == ("Tops", None, "3")
    assert table.numeric["age"] == (30.0, 41.5, 22.0)
    assert table.classes() == [0, 1]


def test_every_problem_is_listed_with_its_column() -> None:
    bad = columns(
        title=[None, None, None],
        body=[None, "", 7],
        dept=["Tops", [1], None],
        age=[1, "x", float("nan")],
        y=[1, 1, 1],
    )
    del bad["dept"]
    bad["extra"] = [0, 0, 0]
    with pytest.raises(ValidationError) as exc:
        validate_table(bad, SCHEMA)
    assert problems(exc) == [
        (["input", "dept"], "declared column 'dept' is missing from the table"),
        (["input", "body"], "text column holds non-text values (rows 2)"),
        (["input", "title"], "every text cell is empty"),
        (["input", "age"], "numeric column holds non-numbers (rows 1)"),
        (
            ["input", "age"],
            "missing numbers (rows 2) and no imputation policy "
            "(set schema.missing.numeric to mean, median or zero)",
        ),
        (["input", "y"], "the label needs at least two classes, found 1"),
    ]
    assert exc.value.message == "invalid table: 6 problems"


def test_imputation_policy_allows_missing_numbers_but_not_an_empty_column() -> None:
    schema = TableSchema.model_validate({**SCHEMA.model_dump(), "missing": {"numeric": "median"}})
    table = validate_table(columns(age=[None, 2, math.nan]), schema)
    assert table.numeric["age"] == (None, 2.0, None)
    with pytest.raises(ValidationError) as exc:
        validate_table(columns(age=[None, None, None]), schema)
    assert problems(exc) == [(["input", "age"], "every value is missing: nothing to impute from")]


def test_strict_policies_and_labels() -> None:
    strict = TableSchema.model_validate(
        {**SCHEMA.model_dump(), "missing": {"text": "error", "categorical": "error"}}
    )
    with pytest.raises(ValidationError) as exc:
        validate_table(columns(title=[None] * 3, y=[1.0, None, 0.5]), strict)
    assert problems(exc) == [
        (["input", "title"], "rows without text (rows 2)"),
        (["input", "dept"], "missing categories (rows 1)"),
        (["input", "y"], "missing labels (rows 1)"),
        (["input", "y"], "labels must be strings or integers (rows 2)"),
    ]
    # A reader may hand integer labels over as floats: 1.0 and 1 are one class.
    table = validate_table(columns(y=[1.0, 0, 1]), SCHEMA)
    assert table.labels == (1, 0, 1) and table.classes() == [0, 1]
    unlabeled = columns()
    del unlabeled["y"]
    assert validate_table(unlabeled, SCHEMA, require_label=False).labels is None


def test_limits_are_checked_first() -> None:
    with pytest.raises(ValidationError) as exc:
        validate_table(columns(), SCHEMA, limits=TableLimits(max_rows=2))
    assert problems(exc) == [(["input"], "3 rows exceeds the limit of 2")]
    with pytest.raises(ValidationError) as exc:
        validate_table(columns(age=[1, 2]), SCHEMA)
    assert problems(exc) == [(["input"], "columns have different lengths: [2, 3]")]


def test_schema_roles_must_not_overlap() -> None:
    with pytest.raises(ValueError, match="'age' is both categorical and numeric"):
        TableSchema(categorical=["age"], numeric=["age"], label="y")
    with pytest.raises(ValueError, match="'y' is both label and numeric"):
        TableSchema(numeric=["y"], label="y")
    with pytest.raises(ValueError, match="at least one text, categorical or numeric"):
        TableSchema(label="y")


def test_parquet_csv_and_jsonl_read_to_the_same_table() -> None:
    import pandas as pd

    frame = pd.DataFrame(columns())
    parquet, csv, jsonl = io.BytesIO(), io.StringIO(), io.StringIO()
    frame.astype({"dept": "string"}).to_parquet(parquet)
    frame.to_csv(csv, index=False)
    frame.to_json(jsonl, orient="records", lines=True)
    tables = [
        validate_table(read_table_bytes(data), SCHEMA)
        for data in (parquet.getvalue(), csv.getvalue().encode(), jsonl.getvalue().encode())
    ]
    assert tables[0] == tables[1] == tables[2]
    assert tables[0].texts == ("Nice\nloved it", "fits well", "Bad")
    with pytest.raises(ValidationError, match="not readable as parquet"):
        read_table_bytes(b"PAR1 not really", "parquet")


def test_inline_rows_and_artifacts() -> None:
    rows = [{"title": "a", "y": 1}, {"body": "b", "y": 0, "age": 3}]
    cols = resolve_table_input({"rows": rows}, load_artifact=lambda _: b"")
    assert cols == {"title": ["a", None], "y": [1, 0], "body": [None, "b"], "age": [None, 3]}
    stored = {"abc": b'{"title": "t", "y": 1}\n{"title": "u", "y": 0}\n'}
    cols = resolve_table_input({"artifact": "abc", "format": "jsonl"}, stored.__getitem__)
    assert cols == {"title": ["t", "u"], "y": [1, 0]}
    with pytest.raises(ValidationError) as exc:
        resolve_table_input({"rows": [{"title": {"x": 1}}, 3]}, stored.__getitem__)
    assert [d["loc"] for d in exc.value.details] == [["input", "rows", 1]]
    with pytest.raises(ValidationError) as exc:
        resolve_table_input({"artifact": "abc", "format": "xlsx"}, stored.__getitem__)
    assert exc.value.details[0]["loc"] == ["input", "format"]
