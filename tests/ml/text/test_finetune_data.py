"""The torch-free parts of fine-tuning: data checks, splits, length bucketing, metrics."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from open_autoglm.errors import ValidationError
from open_autoglm.ml.text.finetune.bucketing import bucketed_batches, padded_tokens
from open_autoglm.ml.text.finetune.dataset import SplitName, build_dataset, label_order
from open_autoglm.ml.text.finetune.metrics import evaluation_report
from open_autoglm.ml.text.finetune.plots import confusion_png
from open_autoglm.ml.text.finetune.split import given_split, stratified_split


def table(texts: list, labels: list, **more: list) -> dict[str, list]:
    return {"text": texts, "label": labels, **more}


def problems(exc: pytest.ExceptionInfo[ValidationError]) -> set[tuple[tuple, str]]:
    return {(tuple(d["loc"]), d["msg"]) for d in exc.value.details}


def test_every_data_problem_is_listed_with_its_field() -> None:
    texts = ["good", "", None, 7, "bad", "fine", "meh", "ok"]
    labels = ["pos", "neg", "pos", None, "neg", "spam", "pos", "neg"]
    with pytest.raises(ValidationError) as exc:
        build_dataset(
            table(texts, labels),
            text_column="text",
            label_column="label",
            labels=["neg", "pos"],
            min_per_class=4,
        )
    assert problems(exc) == {
        (("input", "text"), "row 3: text cells must be strings"),
        (("input", "text"), "rows 1, 2: empty text"),
        (("input", "label"), "row 3: missing label"),
        (("input", "label"), "labels not in params.labels: ['spam']"),
        (
            ("input", "label"),
            "too few rows for labels [('neg', 3), ('pos', 3)]: each needs at least 4 for a "
            "stratified train/validation/test split",
        ),
    }
    assert exc.value.message.startswith("text-classifier-train: 5 problem(s)")


def test_missing_columns_name_the_params_field() -> None:
    with pytest.raises(ValidationError) as exc:
        build_dataset(
            {"body": ["a"], "y": [1]},
            text_column="text",
            label_column="label",
            split_column="part",
        )
    assert [d["loc"] for d in exc.value.details] == [
        ["params", "text_column"],
        ["params", "label_column"],
        ["params", "split"],
    ]
    assert "not in the table (columns: ['body', 'y'])" in exc.value.details[0]["msg"]


def test_too_few_rows_per_class_and_a_single_label() -> None:
    with pytest.raises(ValidationError) as exc:
        build_dataset(
            table(["a", "b", "c", "d"], ["x", "x", "x", "y"]),
            text_column="text",
            label_column="label",
        )
    (detail,) = exc.value.details
    assert detail["loc"] == ["input", "label"] and "('y', 1)" in detail["msg"]
    with pytest.raises(ValidationError, match="at least two labels"):
        build_dataset(table(["a", "b", "c"], [1, 1, 1]), text_column="text", label_column="label")


def test_given_split_column_is_checked_and_used() -> None:
    cols = table(["a", "b", "c", "d"], [0, 1, 0, 1], part=["train", "train", "validation", "dev"])
    with pytest.raises(ValidationError) as exc:
        build_dataset(cols, text_column="text", label_column="label", split_column="part")
    assert problems(exc) == {
        (("input", "part"), "row 3: split must be one of ['test', 'train', 'validation']")
    }
    cols["part"][3] = "test"
    data = build_dataset(cols, text_column="text", label_column="label", split_column="part")
    assert data.splits == [SplitName.TRAIN, SplitName.TRAIN, SplitName.VALIDATION, SplitName.TEST]
    assert given_split(data.splits).sizes() == {"train": 2, "validation": 1, "test": 1}


def test_label_order_is_numeric_for_numbers_and_ids_follow_it() -> None:
    assert label_order([10, 2, 2.0, 1]) == ["1", "2", "10"]
    data = build_dataset(table(["a"] * 9, [10, 2, 1] * 3), text_column="text", label_column="label")
    assert data.label_names == ["1", "2", "10"] and data.labels[:3] == [2, 1, 0]


def test_stratified_split_keeps_every_class_in_every_part() -> None:
    labels = [0] * 50 + [1] * 30 + [2] * 3
    split = stratified_split(labels, validation=0.1, test=0.2, seed=1)
    assert sorted(split.train + split.validation + split.test) == list(range(len(labels)))
    for part, expected in (
        (split.test, {0: 10, 1: 6, 2: 1}),
        (split.validation, {0: 5, 1: 3, 2: 1}),
    ):
        assert Counter(labels[i] for i in part) == expected
    assert stratified_split(labels, validation=0.1, test=0.2, seed=1) == split
    assert stratified_split(labels, validation=0.1, test=0.2, seed=2) != split
    no_test = stratified_split(labels, validation=0.1, test=0.0, seed=1)
    assert no_test.test == [] and len(no_test.validation) == 9


def test_bucketing_is_deterministic_covers_every_row_and_saves_padding() -> None:
    rng = np.random.default_rng(0)
    lengths = [int(n) for n in rng.integers(4, 120, size=400)]
    rows = list(range(0, 400, 2))  # the train rows only
    one = bucketed_batches(rows, lengths, batch_size=8, seed=3, epoch=0, chunk_batches=10)
    assert one == bucketed_batches(rows, lengths, batch_size=8, seed=3, epoch=0, chunk_batches=10)
    assert sorted(r for b in one for r in b) == rows
    other_epoch = bucketed_batches(rows, lengths, batch_size=8, seed=3, epoch=1, chunk_batches=10)
    assert other_epoch != one and sorted(r for b in other_epoch for r in b) == rows
    plain = bucketed_batches(rows, lengths, batch_size=8, seed=3, epoch=0, chunk_batches=1)
    assert padded_tokens(one, lengths) < 0.7 * padded_tokens(plain, lengths)
    # within a batch the lengths are close: each batch is a slice of a length-sorted chunk
    spread = np.mean([max(lengths[r] for r in b) - min(lengths[r] for r in b) for b in one])
    assert spread < 20


def test_evaluation_report_counts_and_scores() -> None:
    truth = [0, 0, 1, 1, 2, 2]
    proba = np.eye(3)[[0, 1, 1, 1, 2, 0]] * 0.8 + 0.2 / 3
    report = evaluation_report(truth, proba, ["a", "b", "c"])
    assert report["confusion"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert report["accuracy"] == pytest.approx(4 / 6)
    assert report["per_class"]["b"] == {
        "precision": pytest.approx(2 / 3),
        "recall": 1.0,
        "f1": pytest.approx(0.8),
        "support": 2,
    }
    assert report["macro_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert report["loss"] == pytest.approx(
        -np.mean(np.log([0.8667, 0.0667, 0.8667, 0.8667, 0.8667, 0.0667])), rel=1e-3
    )
    png = confusion_png(report["confusion"], ["a", "b", "c"], title="t")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
