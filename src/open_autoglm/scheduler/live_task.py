"""The scheduler's in-memory record of a task that has not yet reached a stored terminal state."""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from open_autoglm.futures import Promise
from open_autoglm.spec.task import TaskSpec, TaskStatus
from open_autoglm.tasks.base import TaskType

__all__ = ["LiveTask"]


@dataclass(slots=True, eq=False)
class LiveTask:
    id: str
    spec: TaskSpec
    task_type: TaskType
    params: Any
    status: TaskStatus
    attempts: int
    created_at: float
    shape: tuple[float, int, int]
    started_at: float | None = None
    finished_at: float | None = None
    executor: str | None = None
    handle: Any = None
    deadline: float | None = None
    cancel_requested: str = ""
    durable: bool = True
    batch: Any = None  # the BatchRun this task runs in, if batched
    zombie: bool = False  # marked terminal while its thread still runs (ignored timeout)
    progress: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    result: Any = None
    done: Future[dict[str, Any]] = field(default_factory=Promise)
    public_spec: dict[str, Any] | None = None  # the spec as shown to users, dumped once
    # Online tasks are stored once, when they end: their row and status events wait here.
    pending_row: dict[str, Any] | None = None
    pending_events: list[tuple[float, str, Any]] | None = None
    # An online task answered before its record was stored: the commit of that record.
    logged: Future[Any] | None = None
    principal: str | None = None  # whose task: its API key's owner (None without keys)

    def as_dict(self) -> dict[str, Any]:
        spec = self.spec
        return {
            "id": self.id,
            "task_type": spec.task_type,
            "model": spec.model,
            "status": self.status.value,
            "priority": spec.priority,
            "attempts": self.attempts,
            "max_retries": spec.max_retries,
            "idempotency_key": spec.idempotency_key,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "error": self.error,
            "progress": self.progress,
            "spec": self._public_spec(),
            "owner": self.principal,
        }

    def _public_spec(self) -> dict[str, Any]:
        if self.public_spec is None:
            self.public_spec = self.spec.model_dump(mode="json", exclude_defaults=True)
        return self.public_spec
