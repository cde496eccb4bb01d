"""What flows in and out of the scheduler core: events, instructions and timers.

The core (:mod:`open_autoglm.scheduler.core`) consumes *events* from its adapter (a task was
accepted, a job ended, a cancel was asked for, tasks were lost to another server) together
with the current time, and answers with *instructions* (start these tasks on that executor,
stop this one, record a retry, record a terminal state). Timers are data too: the core keeps
them in a heap and fires them when the adapter hands it a time past theirs, so its tests run
on a simulated clock. Every class here is a frozen dataclass, told apart by type.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from open_autoglm.executors.base import Outcome
from open_autoglm.scheduler.live_task import LiveTask
from open_autoglm.spec.task import TaskStatus

__all__ = [
    "CancelRequested",
    "Dropped",
    "Enqueued",
    "Event",
    "Finish",
    "Instruction",
    "JobEnded",
    "Requeue",
    "Start",
    "Stop",
    "StopSignal",
    "TakenOver",
    "TaskArrived",
    "TaskRecovered",
    "TasksLost",
    "Timer",
    "TimerKind",
]


class TimerKind(enum.StrEnum):
    RETRY = "retry"  # a failed task's backoff ended: queue it again
    DEADLINE = "deadline"  # a running task's timeout: ask it to stop
    FORCE_TIMEOUT = "force_timeout"  # it ignored the request: fail it now
    BATCH = "batch"  # a held batch group's wait ended: look at the queue again


class StopSignal(enum.StrEnum):
    """What a running job's handle is told when it must stop."""

    CANCELLED = "cancelled"
    TIMEOUT = "timeout"


@dataclass(frozen=True, order=True, slots=True)
class Timer:
    at: float
    seq: int  # breaks ties in arrival order
    kind: TimerKind = field(compare=False)
    task_id: str = field(compare=False)


# --------------------------------------------------------------------------- events in


@dataclass(frozen=True, slots=True)
class TaskArrived:
    """A stored (or online) task may be queued now."""

    task: LiveTask


@dataclass(frozen=True, slots=True)
class TaskRecovered:
    """A task a dead process left behind goes back into the queue (no new transition)."""

    task: LiveTask


@dataclass(frozen=True, slots=True)
class JobEnded:
    """The executor reports the end of a task's job (exactly once per start)."""

    task_id: str
    outcome: Outcome


@dataclass(frozen=True, slots=True)
class CancelRequested:
    task: LiveTask
    reason: str = "cancelled by request"


@dataclass(frozen=True, slots=True)
class TakenOver:
    """Another server owns these tasks now: drop the queued ones, stop the running ones."""

    tasks: tuple[LiveTask, ...]


@dataclass(frozen=True, slots=True)
class TasksLost:
    """These tasks' start could not be recorded as ours: forget them, freeing their slots."""

    tasks: tuple[LiveTask, ...]


Event = TaskArrived | TaskRecovered | JobEnded | CancelRequested | TakenOver | TasksLost


# --------------------------------------------------------------------------- instructions out


@dataclass(frozen=True, slots=True)
class Enqueued:
    """``task`` entered the queue (QUEUED is observed from here)."""

    task: LiveTask


@dataclass(frozen=True, slots=True)
class Start:
    """Hand ``tasks`` (already marked running) to ``executor``; one job, if ``batch``."""

    executor: str
    tasks: tuple[LiveTask, ...]
    batch: bool


@dataclass(frozen=True, slots=True)
class Stop:
    """Ask a running task's job to stop (its outcome then finishes it)."""

    task: LiveTask
    signal: StopSignal


@dataclass(frozen=True, slots=True)
class Requeue:
    """A retryable failure: record it; the task runs again after ``delay`` seconds."""

    task: LiveTask
    delay: float
    error: dict[str, Any] | None
    at: float


@dataclass(frozen=True, slots=True)
class Finish:
    """``task`` reached a terminal state (already set on it): record it, then answer."""

    task: LiveTask
    old: TaskStatus
    result: Any = None
    has_result: bool = False
    artifacts: list[dict[str, Any]] | None = None


@dataclass(frozen=True, slots=True)
class Dropped:
    """A queued task another server took over: its waiters learn so."""

    task: LiveTask


Instruction = Enqueued | Start | Stop | Requeue | Finish | Dropped
