"""What the workflow service's loop consumes: its inbox messages, the record it keeps of a live
run, and the engine event a finished step task becomes.

Kept apart from :mod:`open_autoglm.workflows.service` so the loop reads as the decisions it
takes on these, not their shapes.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from open_autoglm.workflows.engine import WorkflowRun
from open_autoglm.workflows.protocol import Event, StepFailed, StepSucceeded, StepTimedOut

__all__ = [
    "AcceptedMsg",
    "CancelMsg",
    "LiveRun",
    "Msg",
    "RecoverMsg",
    "StartMsg",
    "StepEventMsg",
    "in_flight",
    "task_event",
]

# Task error codes that another attempt cannot fix.
_PERMANENT = frozenset({"validation_error", "not_found", "bad_result", "unrecoverable", "blocked"})


@dataclass
class StartMsg:
    run: WorkflowRun
    created: dict[str, Any]
    reply: Future[dict[str, Any]]


@dataclass
class CancelMsg:
    run_id: str
    reason: str
    reply: Future[dict[str, Any]]


@dataclass
class StepEventMsg:
    run_id: str
    event: Event


@dataclass
class AcceptedMsg:
    run_id: str
    step_id: str
    attempt: int
    task_id: str
    live: bool  # still in the scheduler; False: finished, read its stored state


@dataclass
class RecoverMsg:
    reply: Future[int]


@dataclass
class LiveRun:
    run: WorkflowRun
    created: dict[str, Any] | None = None
    tasks: dict[tuple[str, int], str] = field(default_factory=dict)
    pending_cancel: set[tuple[str, int]] = field(default_factory=set)
    snapshot: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    was_status: str = ""
    done: Future[dict[str, Any]] = field(default_factory=Future)
    principal: str | None = None  # whose run: its step tasks are that owner's too


Msg = StartMsg | CancelMsg | StepEventMsg | AcceptedMsg | RecoverMsg | None


def in_flight(state: Mapping[str, Any]) -> list[tuple[str, int]]:
    """``(step_id, attempt)`` of every submitted or running task instance, nested included."""
    found: list[tuple[str, int]] = []
    prefix = state.get("prefix", "")
    for rec in state["steps"].values():
        for inst in rec["instances"]:
            if inst["child"] is not None:
                if inst["state"] == "running":
                    found.extend(in_flight(inst["child"]))
            elif inst["state"] in ("submitted", "running"):
                found.append((prefix + inst["id"], int(inst["attempt"])))
    return found


def task_event(step_id: str, attempt: int, task: Mapping[str, Any]) -> Event:
    """The engine event for a finished step task."""
    status = task["status"]
    if status == "succeeded":
        return StepSucceeded(step_id, task.get("result"), attempt)
    err = task.get("error") or {}
    code = str(err.get("code", "failed"))
    message = str(err.get("message", status))
    if status == "failed" and code == "timeout":
        return StepTimedOut(step_id, attempt)
    if status == "cancelled":
        return StepFailed(step_id, f"step task was cancelled: {message}", False, attempt)
    if status not in ("failed",):
        return StepFailed(step_id, f"step task lost (status {status})", True, attempt)
    retryable = err.get("retryable")
    if not isinstance(retryable, bool):  # tasks stored before the flag was recorded
        retryable = code not in _PERMANENT
    return StepFailed(step_id, f"{code}: {message}", retryable, attempt)
