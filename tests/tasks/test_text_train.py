"""The text-classifier-train handler answers a bad table and a missing base model together,
before any model is loaded (called inline: no worker process is needed to refuse)."""

from __future__ import annotations

import pytest

from open_autoglm.errors import ValidationError
from open_autoglm.executors.context import InlineContext
from open_autoglm.tasks.text_train import TextTrainParams, text_train_task_types

(TEXT_TRAIN,) = text_train_task_types()


def test_every_problem_of_table_and_model_in_one_answer() -> None:
    rows = [{"review": t, "sentiment": "positive"} for t in ["good", "fine", "great", "nice"]]
    rows += [{"review": "", "sentiment": "negative"}, {"review": "bad", "sentiment": None}]
    rows += [{"review": "meh", "sentiment": "spam"}, {"review": 3, "sentiment": "negative"}]
    params = TextTrainParams(
        text_column="review", label_column="sentiment", labels=["negative", "positive"]
    )
    ctx = InlineContext(
        task_type=TEXT_TRAIN.name, model="minilm", input=rows, params=params, services={}
    )
    with pytest.raises(ValidationError) as exc:
        TEXT_TRAIN.handler(ctx)
    assert {(tuple(d["loc"]), d["msg"]) for d in exc.value.details} == {
        (("model",), "no models service is available here"),
        (("input", "review"), "row 7: text cells must be strings"),
        (("input", "review"), "row 4: empty text"),
        (("input", "sentiment"), "row 5: missing label"),
        (("input", "sentiment"), "labels not in params.labels: ['spam']"),
        (
            ("input", "sentiment"),
            "too few rows for labels [('negative', 2)]: each needs at least 3 for a "
            "stratified train/validation/test split",
        ),
    }
    assert exc.value.message.startswith("text-classifier-train: 6 problem(s)")


def test_params_refuse_clashing_columns_and_bad_splits() -> None:
    with pytest.raises(ValueError, match="columns must differ"):
        TextTrainParams(text_column="x", label_column="x")
    with pytest.raises(ValueError, match="columns must differ"):
        TextTrainParams.model_validate({"split": {"column": "label"}})
    with pytest.raises(ValueError, match="validation"):
        TextTrainParams.model_validate({"split": {"validation": 0.0}})
    assert TEXT_TRAIN.resources_for is not None
    wide = TextTrainParams.model_validate({"distributed": {"strategy": "ddp", "world_size": 2}})
    assert TEXT_TRAIN.resources_for(wide) == {"cpu": 2.0}
    assert TEXT_TRAIN.mode.value == "process" and TEXT_TRAIN.requires_model
