"""The executor seam. The scheduler speaks only this protocol (local.py, ray_executor.py).

The scheduler calls ``submit_many(jobs, sink)`` with the independent jobs one dispatcher pass
started (``submit(job, sink)`` for one) and ``submit_batch(jobs, sink)`` for a batch group; the
executor runs the job and reports through the
sink: ``sink.event(task_id, kind, data)`` for progress and logs, ``sink.done(task_id,
outcome)`` exactly once at the end. ``handle.cancel(reason)`` asks the work to stop: a thread
job sees ``ctx.is_cancelled()``; a process job is terminated, then killed.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Protocol

from open_autoglm.scheduler.resources import Capacity
from open_autoglm.tasks.base import TaskType

__all__ = ["ExecutionHandle", "Executor", "Job", "Outcome", "OutcomeStatus", "ResultSink"]


class OutcomeStatus(enum.StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class Job:
    task_id: str
    task_type: TaskType
    model: str | None
    input: Any
    params: Any  # the validated params model instance
    metadata: dict[str, Any]
    cpu_threads: int
    attempt: int
    # The task's resource request as the scheduler placed it (Ray maps it one to one).
    cpu: float = 1.0
    memory_mb: int = 0
    gpu: int = 0


@dataclass(frozen=True, slots=True)
class Outcome:
    status: OutcomeStatus
    result: Any = None
    error: dict[str, Any] | None = None
    retryable: bool = False
    artifacts: list[dict[str, Any]] = field(default_factory=list)


class ResultSink(Protocol):
    def event(self, task_id: str, kind: str, data: dict[str, Any]) -> None: ...

    def done(self, task_id: str, outcome: Outcome) -> None: ...


class ExecutionHandle(Protocol):
    def cancel(self, reason: str) -> None: ...


class Executor(Protocol):
    name: str
    capacity: Capacity

    def start(self) -> None: ...

    def submit(self, job: Job, sink: ResultSink) -> ExecutionHandle: ...

    def submit_many(self, jobs: list[Job], sink: ResultSink) -> list[ExecutionHandle]:
        """Independent jobs started together (one dispatcher pass); a handle per job."""
        ...

    def submit_batch(self, jobs: list[Job], sink: ResultSink) -> list[ExecutionHandle]:
        """One batch group, run together through its type's ``batch_handler``."""
        ...

    def shutdown(self, wait: bool = True) -> None: ...
