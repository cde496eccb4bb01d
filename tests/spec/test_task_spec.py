from __future__ import annotations

import pytest

from open_autoglm.errors import ValidationError
from open_autoglm.spec.task import PRIORITY_NAMES, TaskSpec, parse_task_spec

GEN_PARAMS = {"max_tokens", "temperature", "top_p"}


def fields(task_type: str) -> set[str] | None:
    return {"text-generation": GEN_PARAMS, "echo": set()}.get(task_type)


def test_seed_flat_form_moves_params():
    spec = parse_task_spec(
        {
            "model": "m",
            "task_type": "text-generation",
            "max_tokens": 512,
            "temperature": 0.7,
            "input": "hi",
        },
        fields,
    )
    assert isinstance(spec, TaskSpec)
    assert spec.params == {"max_tokens": 512, "temperature": 0.7}
    assert spec.model == "m" and spec.input == "hi" and spec.priority == 5


def test_nested_and_flat_params_merge_and_conflict_is_named():
    spec = parse_task_spec(
        {"task_type": "text-generation", "params": {"top_p": 0.9}, "max_tokens": 3}, fields
    )
    assert spec.params == {"top_p": 0.9, "max_tokens": 3}
    with pytest.raises(ValidationError) as exc:
        parse_task_spec(
            {"task_type": "text-generation", "params": {"max_tokens": 1}, "max_tokens": 3}, fields
        )
    assert exc.value.details[0]["loc"] == ["max_tokens"]


@pytest.mark.parametrize(("name", "value"), sorted(PRIORITY_NAMES.items()))
def test_priority_names(name, value):
    assert parse_task_spec({"task_type": "echo", "priority": name}, fields).priority == value


def test_unknown_fields_and_task_type_all_reported():
    with pytest.raises(ValidationError) as exc:
        parse_task_spec({"task_type": "nope", "colour": 1, "priority": 12}, fields)
    locs = [d["loc"] for d in exc.value.details]
    assert ["task_type"] in locs and ["colour"] in locs and ["priority"] in locs


def test_input_and_inputs_are_exclusive():
    with pytest.raises(ValidationError, match="either 'input' or 'inputs'"):
        parse_task_spec({"task_type": "echo", "input": 1, "inputs": [1]}, fields)


def test_depth_bound():
    deep: object = 1
    for _ in range(40):
        deep = [deep]
    with pytest.raises(ValidationError, match="nested deeper"):
        parse_task_spec({"task_type": "echo", "input": deep}, fields, max_depth=32)
