"""Task state transitions, validated in one place (a ``(from, to)`` table)."""

from __future__ import annotations

from open_autoglm.errors import ConflictError
from open_autoglm.spec.task import TaskStatus

__all__ = ["ALLOWED", "check_transition"]

Q, R, S, F, C = (
    TaskStatus.QUEUED,
    TaskStatus.RUNNING,
    TaskStatus.SUCCEEDED,
    TaskStatus.FAILED,
    TaskStatus.CANCELLED,
)

ALLOWED: frozenset[tuple[TaskStatus, TaskStatus]] = frozenset(
    {
        (Q, R),  # placed on an executor
        (Q, C),  # cancelled while waiting
        (Q, F),  # could never fit / expired while queued / recovery gave up
        (R, S),
        (R, F),  # handler error, timeout, crash with retries spent
        (R, Q),  # retry after a retryable failure, or re-queued after a crash
        (R, C),  # cancelled while running
    }
)


def check_transition(current: TaskStatus, new: TaskStatus) -> None:
    if (current, new) not in ALLOWED:
        raise ConflictError(f"task cannot go from {current.value} to {new.value}")
