"""Admission checks and the facts a new task is given: its validated params, its resource
shape and its id. Pure functions the scheduler's adapter calls before anything is queued."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError as PydanticError

from open_autoglm.errors import NotFoundError, ValidationError
from open_autoglm.scheduler.priority_queue import Shape
from open_autoglm.scheduler.resources import ResourcePool
from open_autoglm.spec.task import TaskSpec, pydantic_details, summarize
from open_autoglm.tasks.base import TaskType

__all__ = ["new_task_id", "task_shape", "validate_task"]


def validate_task(
    spec: TaskSpec, resolve_type: Callable[[str], TaskType], pool: ResourcePool
) -> tuple[TaskType, Any]:
    """Resolve ``spec``'s task type and validate its params, model, input and resources;
    raises ValidationError naming every problem."""
    try:
        ttype = resolve_type(spec.task_type)
    except NotFoundError as exc:
        raise ValidationError(
            exc.message, details=[{"loc": ["task_type"], "msg": exc.message}]
        ) from None
    try:
        params = ttype.params_model.model_validate(spec.params)
    except PydanticError as exc:
        details = pydantic_details(exc, ("params",))
        raise ValidationError(
            f"invalid params for {spec.task_type}: {summarize(details)}", details=details
        ) from None
    problems = []
    if ttype.requires_model and not spec.model:
        problems.append({"loc": ["model"], "msg": f"task type {spec.task_type!r} needs a model"})
    if ttype.requires_input and spec.payload() is None:
        problems.append({"loc": ["input"], "msg": f"task type {spec.task_type!r} needs an input"})
    shape = task_shape(spec, ttype, params)
    if pool and not pool.could_ever_fit(shape):
        want = {"cpu": shape[0], "memory_mb": shape[1], "gpu": shape[2]}
        problems.append({"loc": ["resources"], "msg": f"no executor can ever fit {want}"})
    if problems:
        raise ValidationError("invalid task spec: " + summarize(problems), details=problems)
    return ttype, params


_ID_LOCK = threading.Lock()
_ID_POOL: list[bytes] = []


def new_task_id() -> str:
    """A random (version 4) UUID as 32 hex digits, like ``uuid.uuid4().hex``.

    The random bytes come from ``os.urandom`` 256 ids at a time: one system call per id
    released the GIL on every submission, and winning it back under load cost more than
    everything else ``submit`` does.
    """
    with _ID_LOCK:
        if not _ID_POOL:
            raw = os.urandom(16 * 256)
            _ID_POOL.extend(raw[i : i + 16] for i in range(0, len(raw), 16))
        b = _ID_POOL.pop()
    return uuid.UUID(bytes=b, version=4).hex


def task_shape(spec: TaskSpec, ttype: TaskType, params: Any) -> Shape:
    """The (cpu, memory_mb, gpu) a task asks for: its spec's, else what its type derives from
    its params, else its type's default."""
    if spec.resources is not None:
        r = spec.resources
        return (r.cpu, r.memory_mb, r.gpu)
    d = ttype.resources_for(params) if ttype.resources_for else ttype.default_resources
    return (float(d.get("cpu", 1.0)), int(d.get("memory_mb", 0)), int(d.get("gpu", 0)))
