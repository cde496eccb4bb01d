"""What flows in and out of the workflow engine: states, events and instructions.

The engine (:mod:`open_autoglm.workflows.engine`) consumes *events* from its adapter (a step
started, succeeded, failed, timed out; a cancel request; the clock moved) and answers with
*instructions* (submit this step, cancel that one, wake me at ``t``, send a callback, the run
is finished). Everything here is a frozen dataclass holding JSON data, so an adapter can log,
persist or ship any of them.

Step ids name one runnable instance: ``classify``, ``embed[3]`` for item 3 of a mapped step,
``sub/inner`` or ``sub[1]/inner[0]`` for a step of a nested workflow. ``attempt`` (1-based)
lets the engine drop late events from an attempt it already gave up on; ``None`` means
"the current attempt".
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Cancel",
    "CancelStep",
    "Event",
    "Instruction",
    "RunFinished",
    "RunStatus",
    "ScheduleRetry",
    "SendCallback",
    "StepFailed",
    "StepStarted",
    "StepState",
    "StepSucceeded",
    "StepTimedOut",
    "SubmitStep",
    "Tick",
]


class RunStatus(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"

    @property
    def terminal(self) -> bool:
        return self not in (RunStatus.PENDING, RunStatus.RUNNING)


class StepState(enum.StrEnum):
    """State of a step and of each of its instances (a mapped step has several)."""

    PENDING = "pending"  # waiting for upstream steps
    SUBMITTED = "submitted"  # SubmitStep sent, not started yet
    RUNNING = "running"
    RETRY_WAIT = "retry_wait"  # failed, a retry is scheduled
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    SKIPPED = "skipped"  # condition false, or upstream did not satisfy the trigger rule
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in _TERMINAL


_TERMINAL = frozenset(
    {
        StepState.SUCCEEDED,
        StepState.FAILED,
        StepState.TIMED_OUT,
        StepState.SKIPPED,
        StepState.CANCELLED,
    }
)


# --------------------------------------------------------------------------- events in


@dataclass(frozen=True, slots=True)
class StepStarted:
    step_id: str
    attempt: int | None = None


@dataclass(frozen=True, slots=True)
class StepSucceeded:
    step_id: str
    output: Any = None
    attempt: int | None = None


@dataclass(frozen=True, slots=True)
class StepFailed:
    step_id: str
    error: str
    retryable: bool = True
    attempt: int | None = None


@dataclass(frozen=True, slots=True)
class StepTimedOut:
    step_id: str
    attempt: int | None = None


@dataclass(frozen=True, slots=True)
class Cancel:
    reason: str = "cancelled by request"


@dataclass(frozen=True, slots=True)
class Tick:
    """The clock moved to ``now`` (seconds, any epoch the adapter uses consistently)."""

    now: float


Event = StepStarted | StepSucceeded | StepFailed | StepTimedOut | Cancel | Tick


# --------------------------------------------------------------------------- instructions out


@dataclass(frozen=True, slots=True)
class SubmitStep:
    """Run ``task`` (references resolved) as attempt ``attempt`` of ``step_id``."""

    step_id: str
    step: str
    attempt: int
    task: dict[str, Any]
    priority: int
    timeout_s: float | None = None
    index: int | None = None


@dataclass(frozen=True, slots=True)
class CancelStep:
    step_id: str
    attempt: int
    reason: str


@dataclass(frozen=True, slots=True)
class ScheduleRetry:
    """Send a :class:`Tick` at or after ``at``; attempt ``attempt`` is then submitted."""

    step_id: str
    attempt: int
    at: float


@dataclass(frozen=True, slots=True)
class SendCallback:
    """POST ``payload`` to ``url``, signed with ``secret`` when one is set."""

    url: str
    event: str  # "step.finished" or "run.finished"
    payload: dict[str, Any]
    secret: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class RunFinished:
    status: RunStatus
    outputs: dict[str, Any]
    error: str | None = None


Instruction = SubmitStep | CancelStep | ScheduleRetry | SendCallback | RunFinished
