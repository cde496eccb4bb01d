"""The in-process runner: real threads, real clock, the same engine."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

from open_autoglm.errors import TaskFailedError
from open_autoglm.spec.workflow import load_workflow, validate_workflow
from open_autoglm.workflows.engine import WorkflowRun
from open_autoglm.workflows.local_runner import LocalRunner
from open_autoglm.workflows.protocol import Instruction, RunStatus, StepState, SubmitStep

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "workflows"
KNOWN = {"echo", "embedding", "text-classification", "rule-inference", "sleep"}


def test_parallel_fan_out_runs_concurrently_and_keeps_order() -> None:
    spec = validate_workflow(
        {
            "name": "fan",
            "inputs": {"xs": {"type": "list"}},
            "steps": [
                {
                    "name": "sq",
                    "map": "inputs.xs",
                    "task": {"task_type": "echo", "input": "${item}"},
                },
                {
                    "name": "sum",
                    "depends_on": ["sq"],
                    "task": {"task_type": "echo", "input": "${steps.sq.output}"},
                },
            ],
        },
        KNOWN,
    )
    lock = threading.Lock()
    active = {"now": 0, "peak": 0}

    def run_task(task: dict[str, Any]) -> Any:
        with lock:
            active["now"] += 1
            active["peak"] = max(active["peak"], active["now"])
        time.sleep(0.01)
        with lock:
            active["now"] -= 1
        x = task["input"]
        return x * x if isinstance(x, int) else sum(x)

    result = LocalRunner(run_task, max_workers=8).run(spec, {"xs": list(range(50))})
    assert result.status is RunStatus.SUCCEEDED
    assert result.run.steps["sq"].output == [i * i for i in range(50)]
    assert result.outputs == {"sum": sum(i * i for i in range(50))}
    assert active["peak"] > 1  # steps really overlapped (a wall-time bound would flake under load)


def test_step_timeout_with_a_hung_thread_and_cancel_flag() -> None:
    spec = validate_workflow(
        {
            "name": "t",
            "steps": [{"name": "hang", "task": {"task_type": "sleep"}, "timeout_s": 0.2}],
        },
        KNOWN,
    )
    seen: list[bool] = []

    def run_task(task: dict[str, Any], cancelled: threading.Event) -> Any:
        seen.append(cancelled.wait(60.0))  # True: the engine cancelled us; False: it never did
        return "too late"

    result = LocalRunner(run_task).run(spec)
    assert result.status is RunStatus.FAILED
    assert result.run.steps["hang"].state is StepState.TIMED_OUT
    assert [c.reason for c in result.cancellations] == ["step timed out"]
    deadline = time.monotonic() + 60
    while not seen and time.monotonic() < deadline:  # the hung thread records once it wakes
        time.sleep(0.01)
    assert seen == [True]


def test_retries_then_success_with_real_backoff() -> None:
    spec = validate_workflow(
        {
            "name": "r",
            "steps": [
                {
                    "name": "flaky",
                    "task": {"task_type": "echo"},
                    "retries": {"max_retries": 2, "backoff_s": 0.05},
                }
            ],
        },
        KNOWN,
    )
    times: list[float] = []

    def run_task(task: dict[str, Any]) -> Any:
        times.append(time.monotonic())
        if len(times) < 3:
            raise TaskFailedError("try again", retryable=True)
        return "done"

    result = LocalRunner(run_task).run(spec)
    assert result.status is RunStatus.SUCCEEDED and result.outputs == {"flaky": "done"}
    assert [s.attempt for s in result.submissions] == [1, 2, 3]
    assert times[1] - times[0] >= 0.05 and times[2] - times[1] >= 0.1  # backoff doubled


def test_cancel_mid_run() -> None:
    spec = validate_workflow(
        {
            "name": "c",
            "steps": [
                {"name": "slow", "map": [1, 2, 3], "task": {"task_type": "sleep"}},
                {"name": "never", "depends_on": ["slow"], "task": {"task_type": "echo"}},
            ],
        },
        KNOWN,
    )

    def run_task(task: dict[str, Any], cancelled: threading.Event) -> Any:
        cancelled.wait(5.0)
        return None

    result = LocalRunner(run_task).run(spec, cancel_after_s=0.1)
    assert result.status is RunStatus.CANCELLED
    assert sorted(c.step_id for c in result.cancellations) == ["slow[0]", "slow[1]", "slow[2]"]
    assert result.run.step_states() == {"slow": StepState.CANCELLED, "never": StepState.CANCELLED}


def test_crash_and_resume_never_reruns_completed_steps() -> None:
    spec = validate_workflow(
        {
            "name": "crash",
            "steps": [
                {"name": "a", "task": {"task_type": "echo", "input": "A"}},
                {
                    "name": "b",
                    "depends_on": ["a"],
                    "task": {"task_type": "echo", "input": "B"},
                    "retries": 1,
                },
                {
                    "name": "c",
                    "depends_on": ["b"],
                    "task": {"task_type": "echo", "input": "${steps.a.output}${steps.b.output}"},
                },
            ],
        },
        KNOWN,
    )
    saved: list[str] = []

    def persist(run: WorkflowRun, instructions: list[Instruction]) -> None:
        saved.append(json.dumps(run.to_dict()))

    class Crash(BaseException):
        pass

    def crashing(task: dict[str, Any]) -> Any:
        if task["input"] == "B":
            raise Crash  # the process "dies" while b runs
        return task["input"]

    try:
        LocalRunner(crashing, max_workers=0, on_instructions=persist).run(spec)
    except Crash:
        pass
    run = WorkflowRun.from_dict(json.loads(saved[-1]))
    assert run.steps["a"].state is StepState.SUCCEEDED
    assert run.instance("b").state is StepState.SUBMITTED

    calls: list[str] = []

    def run_task(task: dict[str, Any]) -> Any:
        calls.append(task["input"])
        return task["input"]

    result = LocalRunner(run_task).run(run)
    assert result.status is RunStatus.SUCCEEDED
    assert calls == ["B", "AB"]  # a was not run again
    assert result.outputs == {"c": "AB"}
    assert [s.attempt for s in result.submissions if s.step == "b"] == [2]


def test_example_pipeline_runs_both_branches() -> None:
    spec = validate_workflow(load_workflow(EXAMPLES / "document_triage.yaml"), KNOWN)

    def fake_models(task: dict[str, Any]) -> Any:
        # The task types' real output shapes: embeddings, ranked predictions, rule outcomes.
        kind = task["task_type"]
        if kind == "embedding":
            return {"embeddings": [[float(len(task["input"])), 1.0]], "dimension": 2}
        if kind == "text-classification":
            labels = task["params"]["labels"]
            return {
                "predictions": [
                    [{"label": labels[0] if "!" in d else "billing", "score": 0.95}]
                    for d in task["input"]
                ]
            }
        if kind == "rule-inference":
            (ticket,) = task["input"]
            return {"emitted": [{"event": "page", "tier": ticket["tier"]}], "fired": 1}
        return task.get("input")

    urgent = LocalRunner(fake_models).run(spec, {"documents": ["server down!", "invoice"]})
    assert urgent.status is RunStatus.SUCCEEDED
    assert urgent.run.steps["escalate"].state is StepState.SUCCEEDED
    assert urgent.run.steps["file_billing"].state is StepState.SKIPPED
    esc = next(s for s in urgent.submissions if s.step == "escalate")
    assert esc.priority == 9
    assert esc.task["input"] == [
        {"type": "ticket", "score": 0.95, "tier": "standard", "documents": 2}
    ]
    assert urgent.outputs["summary"] == {
        "escalated": True,
        "billing": False,
        "labels": urgent.run.steps["classify"].output["predictions"],
    }
    assert [c.event for c in urgent.callbacks] == ["step.finished", "run.finished"]

    billing = LocalRunner(fake_models).run(
        spec, {"documents": ["invoice"], "customer_tier": "gold"}
    )
    assert billing.run.steps["escalate"].reason is not None
    assert billing.run.steps["escalate"].reason.startswith("condition false")
    filed = next(s for s in billing.submissions if s.step == "file_billing")
    assert filed.task["input"] == "billing ticket for a gold customer"
    assert billing.outputs["escalation"] is None
    assert isinstance(billing.submissions[0], SubmitStep)


def test_nested_moderation_example_fans_out_sub_workflows() -> None:
    spec = validate_workflow(load_workflow(EXAMPLES / "batch_moderation.yaml"), KNOWN)

    def fake_models(task: dict[str, Any]) -> Any:
        if task["task_type"] == "text-classification":
            label = "insult" if "idiot" in task["input"] else "friendly"
            return {"predictions": [[{"label": label, "score": 0.95}]]}
        if task["task_type"] == "rule-inference":
            (comment,) = task["input"]
            blocked = comment["score"] >= comment["block_score"]
            return {"emitted": [{"event": "blocked"}] if blocked else []}
        return task["input"]

    result = LocalRunner(fake_models).run(spec, {"comments": ["nice", "you idiot", "fine"]})
    assert result.status is RunStatus.SUCCEEDED
    assert sorted(s.step_id for s in result.submissions) == [
        "per_comment[0]/classify",
        "per_comment[1]/classify",
        "per_comment[1]/rules",
        "per_comment[2]/classify",
        "report",
    ]
    assert result.outputs["report"] == {
        "total": 3,
        "results": [
            {"label": "friendly", "blocked": False},
            {"label": "insult", "blocked": True},
            {"label": "friendly", "blocked": False},
        ],
    }
    child = result.run.instance("per_comment[0]").child
    assert child is not None
    assert child.steps["rules"].state is StepState.SKIPPED
    assert child.steps["rules"].reason == (
        'condition false: steps.classify.output.predictions[0][0].label == "insult"'
    )
