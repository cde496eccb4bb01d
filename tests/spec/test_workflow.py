"""WorkflowSpec parsing and submit-time validation: every problem, each with its own message."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from open_autoglm.errors import ValidationError
from open_autoglm.spec.workflow import (
    RetryPolicy,
    TriggerRule,
    WorkflowSpec,
    bind_inputs,
    load_workflow,
    validate_workflow,
)

KNOWN = {"echo", "sleep", "embedding", "text-classification", "rule-inference"}
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "workflows"

BASE: dict[str, Any] = {
    "name": "wf",
    "inputs": {"text": {"type": "string"}, "n": {"type": "integer", "default": 2}},
    "steps": [
        {"name": "a", "task": {"task_type": "echo", "input": "${inputs.text}"}},
        {
            "name": "b",
            "depends_on": ["a"],
            "task": {"task_type": "text-classification", "input": "${steps.a.output}"},
        },
        {
            "name": "c",
            "depends_on": ["b"],
            "when": "steps.b.output.label == 'x'",
            "task": {"task_type": "echo", "input": "${steps.a.output}"},
        },
    ],
}


def problems(doc: dict[str, Any], **kwargs: Any) -> list[str]:
    with pytest.raises(ValidationError) as info:
        validate_workflow(doc, KNOWN, **kwargs)
    return [d["msg"] for d in info.value.details]


def with_step(index: int, **changes: Any) -> dict[str, Any]:
    doc = copy.deepcopy(BASE)
    doc["steps"][index].update(changes)
    return doc


def test_valid_spec_parses_with_defaults() -> None:
    spec = validate_workflow(BASE, KNOWN)
    assert isinstance(spec, WorkflowSpec)
    assert spec.step("b").trigger_rule == TriggerRule.ALL_SUCCESS
    assert spec.retries == RetryPolicy()
    assert spec.inputs["text"].required and not spec.inputs["n"].required


def test_yaml_text_and_example_file_validate() -> None:
    text = "name: y\nsteps:\n  - name: s\n    task: {task_type: echo, input: '${1 + 1}'}\n"
    assert validate_workflow(text, KNOWN).steps[0].name == "s"
    for path in sorted(EXAMPLES.glob("*.yaml")):
        validate_workflow(load_workflow(path), KNOWN)


INVALID: list[tuple[str, dict[str, Any], str]] = [
    (
        "cycle",
        {
            "name": "cyc",
            "steps": [
                {"name": "a", "depends_on": ["c"], "task": {"task_type": "echo"}},
                {"name": "b", "depends_on": ["a"], "task": {"task_type": "echo"}},
                {"name": "c", "depends_on": ["b"], "task": {"task_type": "echo"}},
            ],
        },
        "dependency cycle: b -> c -> a -> b",
    ),
    (
        "self-dependency",
        {"name": "s", "steps": [{"name": "a", "depends_on": ["a"], "task": {"task_type": "echo"}}]},
        "dependency cycle: a -> a",
    ),
    (
        "unknown depends_on",
        with_step(1, depends_on=["a", "zz"]),
        "step 'b' depends on unknown step 'zz'",
    ),
    (
        "reference to a non-upstream step",
        with_step(0, task={"task_type": "echo", "input": "${steps.b.output}"}),
        "step 'a' references steps.b but 'b' is not upstream of it (add it to depends_on)",
    ),
    (
        "reference to an unknown step",
        with_step(2, task={"task_type": "echo", "input": "x ${steps.nope.output}"}),
        "step 'c' references unknown step 'nope'",
    ),
    (
        "unknown task type",
        with_step(0, task={"task_type": "translate"}),
        "step 'a': unknown task type 'translate'",
    ),
    (
        "missing task type",
        with_step(0, task={"input": 1}),
        "step 'a': task needs a 'task_type' string",
    ),
    (
        "duplicate names",
        {"name": "d", "steps": [{"name": "a", "task": {"task_type": "echo"}}] * 2},
        "duplicate step name 'a' (also steps[0])",
    ),
    (
        "malformed reference names the position",
        with_step(0, task={"task_type": "echo", "input": "hi ${len(inputs.text}"}),
        "step 'a': bad reference in 'hi ${len(inputs.text}': expected ',' or ')', found end of expression at position 20",
    ),
    (
        "unsafe expression",
        with_step(2, when="__import__('os').system('x')"),
        "step 'c': bad condition \"__import__('os').system('x')\": unknown function '__import__' at position 0",
    ),
    (
        "unknown input",
        with_step(0, task={"task_type": "echo", "input": "${inputs.txt}"}),
        "step 'a' references unknown input 'txt'",
    ),
    (
        "bad trigger rule",
        with_step(1, trigger_rule="one_success"),
        "step 'b': unknown trigger rule 'one_success' (expected one of all_success, any_success, all_done)",
    ),
    (
        "map over a number literal",
        with_step(0, map="42"),
        "step 'a': map must give a list, but is a int literal",
    ),
    (
        "map over a string literal",
        with_step(0, map="'abc'"),
        "step 'a': map must give a list, but is a str literal",
    ),
    (
        "map given a mapping",
        with_step(0, map={"a": 1}),
        "step 'a': bad map {'a': 1}: map must be a list or an expression, not dict",
    ),
    (
        "item outside a map",
        with_step(0, task={"task_type": "echo", "input": "${item}"}),
        "step 'a' uses 'item' but only a mapped step's task has one",
    ),
    (
        "unknown root name",
        with_step(0, task={"task_type": "echo", "input": "${env.HOME}"}),
        "step 'a' references unknown name 'env' (expected inputs, steps, item, index)",
    ),
    (
        "both task and workflow",
        with_step(
            0, workflow={"name": "n", "steps": [{"name": "x", "task": {"task_type": "echo"}}]}
        ),
        "step 'a' needs exactly one of 'task' or 'workflow'",
    ),
    (
        "unknown step field",
        with_step(2, task={"task_type": "echo", "input": "${steps.b.result}"}),
        "step 'c': steps.b.result is not a step field (use output, status or error)",
    ),
    ("bad step name", with_step(0, name="my step"), "step name 'my step' must be an identifier"),
    (
        "bad callback url",
        {**BASE, "callback_url": "ftp://x"},
        "workflow callback_url 'ftp://x' must be an http(s) URL",
    ),
    (
        "nested workflow missing an input",
        {
            "name": "outer",
            "steps": [
                {
                    "name": "sub",
                    "workflow": {
                        "name": "inner",
                        "inputs": {"x": {}},
                        "steps": [
                            {"name": "s", "task": {"task_type": "echo", "input": "${inputs.x}"}}
                        ],
                    },
                }
            ],
        },
        "step 'sub': nested workflow needs input 'x'",
    ),
    (
        "nested workflow problems are located inside it",
        {
            "name": "outer",
            "steps": [
                {
                    "name": "sub",
                    "workflow": {
                        "name": "inner",
                        "steps": [{"name": "s", "task": {"task_type": "nope"}}],
                    },
                }
            ],
        },
        "step 's': unknown task type 'nope'",
    ),
    (
        "chained comparison",
        with_step(2, when="1 < 2 < 3"),
        "step 'c': bad condition '1 < 2 < 3': comparisons cannot be chained; use 'and' at position 6",
    ),
    (
        "input default of the wrong type",
        {**BASE, "inputs": {"n": {"type": "integer", "default": "two"}}},
        "default of input 'n' is not a integer",
    ),
]


@pytest.mark.parametrize(
    ("doc", "message"), [(d, m) for _, d, m in INVALID], ids=[n for n, _, _ in INVALID]
)
def test_invalid_spec_is_rejected_with_a_specific_message(
    doc: dict[str, Any], message: str
) -> None:
    found = problems(doc)
    assert any(m.startswith(message) for m in found), found


def test_every_problem_is_reported_at_once_with_locations() -> None:
    doc = {
        "name": "many",
        "steps": [
            {
                "name": "a",
                "depends_on": ["ghost"],
                "task": {"task_type": "nope"},
                "trigger_rule": "x",
            },
            {"name": "b", "when": "1 +", "task": {"task_type": "echo", "input": "${inputs.q}"}},
        ],
    }
    with pytest.raises(ValidationError) as info:
        validate_workflow(doc, KNOWN)
    locs = [tuple(d["loc"]) for d in info.value.details]
    assert ("steps", 0, "depends_on") in locs
    assert ("steps", 0, "task", "task_type") in locs
    assert ("steps", 0, "trigger_rule") in locs
    assert ("steps", 1, "when") in locs
    assert ("steps", 1, "task", "input") in locs
    assert len(locs) == 5
    assert "5 problem(s)" in info.value.message


def test_structural_errors_come_from_the_model_with_locations() -> None:
    with pytest.raises(ValidationError) as info:
        validate_workflow(
            {"name": "x", "steps": [{"task": {}}, {"name": "b", "colour": "red"}]}, KNOWN
        )
    locs = [d["loc"] for d in info.value.details]
    assert ["steps", 0, "name"] in locs and ["steps", 1, "colour"] in locs


def test_bad_yaml_names_the_line() -> None:
    with pytest.raises(ValidationError, match="at line 4, column 1"):
        validate_workflow("name: x\nsteps:\n  - [unclosed\n", KNOWN)


def test_validate_task_callback_problems_are_located() -> None:
    def check(step: str, task: dict[str, Any]) -> list[Any]:
        out: list[Any] = []
        if "priority" in task and not isinstance(task["priority"], int):
            out.append({"loc": ["priority"], "msg": "priority must be 0-9"})
        if step == "c":
            out.append("c is not allowed")
        return out

    doc = with_step(0, task={"task_type": "echo", "priority": "urgent"})
    with pytest.raises(ValidationError) as info:
        validate_workflow(doc, KNOWN, check)
    assert {
        "loc": ["steps", 0, "task", "priority"],
        "msg": "step 'a': priority must be 0-9",
    } in info.value.details
    assert {"loc": ["steps", 2, "task"], "msg": "step 'c': c is not allowed"} in info.value.details


def test_bind_inputs_fills_defaults_and_lists_all_problems() -> None:
    spec = validate_workflow(BASE, KNOWN)
    assert bind_inputs(spec, {"text": "t"}) == {"text": "t", "n": 2}
    with pytest.raises(ValidationError) as info:
        bind_inputs(spec, {"n": "x", "extra": 1})
    msgs = sorted(d["msg"] for d in info.value.details)
    assert msgs == [
        "input 'n' must be a integer",
        "missing required input 'text'",
        "unknown input 'extra'",
    ]


def test_retry_policy_backoff_is_capped() -> None:
    p = RetryPolicy(max_retries=5, backoff_s=1, backoff_factor=2, max_backoff_s=5)
    assert [p.delay(i) for i in range(1, 6)] == [1, 2, 4, 5, 5]
