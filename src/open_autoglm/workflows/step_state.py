"""Step state records and their legal transitions, the ``(from, to)`` tables in one place.

:class:`StepRecord` is a step as a whole; :class:`StepInstance` is one runnable unit of it
(the step itself, or one item of a mapped step). The engine changes a state only through
:func:`move`, which rejects any pair missing from the tables with a ``ConflictError``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from open_autoglm.errors import ConflictError
from open_autoglm.workflows.protocol import StepState

if TYPE_CHECKING:
    from open_autoglm.workflows.engine import WorkflowRun

__all__ = [
    "ACTIVE",
    "INSTANCE_TRANSITIONS",
    "STEP_TRANSITIONS",
    "StepInstance",
    "StepRecord",
    "move",
]

P, SUB, RUN, RW = StepState.PENDING, StepState.SUBMITTED, StepState.RUNNING, StepState.RETRY_WAIT
OK, FAIL, TO, SKIP, CANC = (
    StepState.SUCCEEDED,
    StepState.FAILED,
    StepState.TIMED_OUT,
    StepState.SKIPPED,
    StepState.CANCELLED,
)

INSTANCE_TRANSITIONS: Final = frozenset(
    {
        (P, SUB),
        (P, RUN),  # a nested workflow starts at once, there is nothing to queue
        (P, FAIL),  # its references could not be resolved
        (P, CANC),
        (SUB, RUN),
        (SUB, OK),  # adapters may skip StepStarted
        (SUB, FAIL),
        (SUB, TO),
        (SUB, RW),
        (SUB, CANC),
        (RUN, OK),
        (RUN, FAIL),
        (RUN, TO),
        (RUN, RW),
        (RUN, CANC),
        (RW, SUB),
        (RW, RUN),
        (RW, FAIL),  # the retry's references could not be resolved
        (RW, CANC),
    }
)

STEP_TRANSITIONS: Final = frozenset(
    {
        (P, RUN),  # trigger rule and condition passed; instances created
        (P, OK),  # map over an empty list
        (P, SKIP),
        (P, FAIL),  # condition or map expression failed to evaluate
        (P, CANC),
        (RUN, OK),
        (RUN, FAIL),
        (RUN, TO),
        (RUN, CANC),
    }
)

ACTIVE: Final = frozenset({SUB, RUN, RW})


def move(
    table: frozenset[tuple[StepState, StepState]], what: str, old: StepState, new: StepState
) -> StepState:
    if (old, new) not in table:
        raise ConflictError(f"{what} cannot go from {old.value} to {new.value}")
    return new


@dataclass
class StepInstance:
    """One runnable unit: a whole step, or one item of a mapped step."""

    id: str
    step: str
    index: int | None = None
    item: Any = None
    state: StepState = StepState.PENDING
    attempt: int = 0
    output: Any = None
    error: str | None = None
    retry_at: float | None = None
    deadline: float | None = None
    child: WorkflowRun | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "index": self.index,
            "item": self.item,
            "state": self.state.value,
            "attempt": self.attempt,
            "output": self.output,
            "error": self.error,
            "retry_at": self.retry_at,
            "deadline": self.deadline,
            "child": None if self.child is None else self.child.to_dict(),
        }


@dataclass
class StepRecord:
    """A step as a whole: its state, why it was skipped or failed, its gathered output."""

    name: str
    state: StepState = StepState.PENDING
    reason: str | None = None
    output: Any = None
    upstream_failed: bool = False
    instances: list[StepInstance] = field(default_factory=list)
    finished: int = 0  # instances in a terminal state

    def context(self) -> dict[str, Any]:
        return {"output": self.output, "status": self.state.value, "error": self.reason}

    def to_dict(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "reason": self.reason,
            "output": self.output,
            "upstream_failed": self.upstream_failed,
            "instances": [i.to_dict() for i in self.instances],
        }

    @classmethod
    def from_dict(
        cls, name: str, data: Mapping[str, Any], load_run: Callable[[Any], WorkflowRun]
    ) -> StepRecord:
        """Rebuild a record; ``load_run`` rebuilds a nested workflow's run."""
        rec = cls(
            name,
            StepState(data["state"]),
            data["reason"],
            data["output"],
            bool(data["upstream_failed"]),
        )
        for d in data["instances"]:
            inst = StepInstance(
                id=d["id"],
                step=name,
                index=d["index"],
                item=d["item"],
                state=StepState(d["state"]),
                attempt=int(d["attempt"]),
                output=d["output"],
                error=d["error"],
                retry_at=d["retry_at"],
                deadline=d["deadline"],
                child=None if d["child"] is None else load_run(d["child"]),
            )
            rec.instances.append(inst)
            rec.finished += int(inst.state.terminal)
        return rec
