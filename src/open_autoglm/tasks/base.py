"""The task-type seam: what a handler is given and what it registers.

A task type is one :class:`TaskType` object: a name, a pydantic model for its ``params``,
and a handler ``handler(ctx) -> result`` where ``result`` is JSON-serialisable. Handlers
never touch HTTP, the scheduler or the database directly; everything they need comes through
the :class:`TaskContext` (progress, logs, cancellation, artifacts, services).
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict

__all__ = [
    "BatchHandler",
    "BatchResults",
    "EmptyParams",
    "ExecutionMode",
    "TaskContext",
    "TaskHandler",
    "TaskType",
]


class ExecutionMode(enum.StrEnum):
    """Where a handler runs: in a worker thread, or in a killable subprocess."""

    THREAD = "thread"
    PROCESS = "process"


class EmptyParams(BaseModel):
    """Params model for task types that take none; rejects any field."""

    model_config = ConfigDict(extra="forbid")


@runtime_checkable
class TaskContext(Protocol):
    """What a running handler sees. Implemented by each executor backend."""

    task_id: str
    task_type: str
    model: str | None
    input: Any
    params: BaseModel
    metadata: Mapping[str, Any]
    cpu_threads: int

    def progress(self, fraction: float, message: str = "", **data: Any) -> None:
        """Report progress in [0, 1]; shows up as a ``progress`` task event."""

    def log(self, message: str, level: str = "info") -> None:
        """Append a log line to the task's event stream."""

    def is_cancelled(self) -> bool:
        """True once cancellation or the deadline was requested."""

    def check_cancelled(self) -> None:
        """Raise :class:`~open_autoglm.errors.TaskCancelledError` if cancelled."""

    def save_artifact(self, data: bytes, *, media_type: str, name: str = "") -> dict[str, Any]:
        """Store bytes content-addressed; returns ``{"id", "sha256", "size", "media_type", "name"}``."""

    def load_artifact(self, artifact_id: str) -> bytes:
        """Read a stored artifact's bytes."""

    def service(self, name: str) -> Any:
        """Look up a platform service by name (e.g. ``"models"``, ``"rulesets"``).

        Raises KeyError when the service is not available in this executor (for example
        inside a subprocess worker).
        """


TaskHandler = Callable[[TaskContext], Any]
# What a batch handler returns: one result per context in order, or ``(index, result)`` pairs
# yielded as each is ready (that task then finishes without waiting for its batch mates).
BatchResults = list[Any] | Iterator[tuple[int, Any]]
BatchHandler = Callable[[list[TaskContext]], BatchResults]


@dataclass(frozen=True)
class TaskType:
    """A registered task type.

    Args:
        name: the ``task_type`` users put in a spec, e.g. ``"embedding"``.
        handler: ``handler(ctx) -> result``; raise ``TaskFailedError(retryable=...)`` to fail.
        params_model: pydantic model validating ``params`` (and the flat form's extra keys).
        requires_model: the spec must name a ``model``.
        names_model: the spec's ``model``, when given, is a registered model (checked at
            submit time, as for ``requires_model``).
        mode: thread (in-process) or process (killable, for long/training work).
        batch_handler: optional ``batch_handler(ctxs)`` for dynamic batching: one result per
            context in order, or ``(index, result)`` pairs yielded as each is ready.
        batch_key: fields of params that must be equal for two tasks to share a batch.
        artifact_params: fields of params that hold artifact ids (checked at submit time).
        model_params: fields of params that name registered models (checked at submit time).
    """

    name: str
    handler: TaskHandler
    params_model: type[BaseModel] = EmptyParams
    description: str = ""
    requires_model: bool = False
    names_model: bool = False
    requires_input: bool = False
    mode: ExecutionMode = ExecutionMode.THREAD
    batch_handler: BatchHandler | None = None
    batch_key: tuple[str, ...] = ()
    artifact_params: tuple[str, ...] = ()
    model_params: tuple[str, ...] = ()
    plugin: str = "builtin"
    # What a task of this type needs when its spec gives no ``resources``.
    default_resources: Mapping[str, float] = field(default_factory=lambda: {"cpu": 1.0})
    # Or derived from the validated params (e.g. a training job's worker count).
    resources_for: Callable[[Any], Mapping[str, float]] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def param_fields(self) -> frozenset[str]:
        return _field_names(self.params_model)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "plugin": self.plugin,
            "requires_model": self.requires_model,
            "requires_input": self.requires_input,
            "mode": self.mode.value,
            "batched": self.batch_handler is not None,
            "default_resources": dict(self.default_resources),
            "params_schema": self.params_model.model_json_schema(),
        }


@functools.cache
def _field_names(model: type[BaseModel]) -> frozenset[str]:
    # pydantic rebuilds ``model_fields`` on every access (tens of µs); a params model's
    # fields never change once defined, and this is asked on every submission.
    return frozenset(model.model_fields)
