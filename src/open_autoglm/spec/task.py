"""TaskSpec: the typed form of a task request, and the parser that accepts the flat form.

Two shapes are accepted::

    {"task_type": "text-generation", "model": "m", "input": "hi",
     "params": {"max_tokens": 512, "temperature": 0.7}}
    {"model": "m", "task_type": "text-generation", "max_tokens": 512, "temperature": 0.7,
     "input": "hi"}                                                  # the flat (seed) form

In the flat form every top-level key that the task type's params model declares is moved into
``params``; any other unknown key is rejected by name. Per-type params validation needs the
task-type registry, which lives above ``spec/``; the caller passes a lookup function.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Collection, Mapping
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

from open_autoglm import errors

__all__ = [
    "PRIORITY_NAMES",
    "TERMINAL_STATUSES",
    "Priority",
    "Resources",
    "TaskSpec",
    "TaskStatus",
    "parse_task_spec",
    "pydantic_details",
    "summarize",
]

PRIORITY_NAMES: Mapping[str, int] = {"low": 2, "normal": 5, "high": 7, "critical": 9}


class TaskStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in _TERMINAL


_TERMINAL = frozenset({TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELLED})
# The terminal statuses as the strings JSON carries (API, SDK, CLI compare against these).
TERMINAL_STATUSES: frozenset[str] = frozenset(s.value for s in _TERMINAL)


def _priority(value: Any) -> Any:
    if isinstance(value, str):
        key = value.strip().lower()
        if key in PRIORITY_NAMES:
            return PRIORITY_NAMES[key]
        if key.isdigit():
            return int(key)
        raise ValueError(
            f"unknown priority name {value!r}; use 0-9 or one of {sorted(PRIORITY_NAMES)}"
        )
    if isinstance(value, bool):
        raise ValueError("priority must be an integer 0-9 or a name, not a boolean")
    return value


Priority = Annotated[int, BeforeValidator(_priority), Field(ge=0, le=9)]
Name = Annotated[
    str, StringConstraints(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._:/@+-]+$")
]


class Resources(BaseModel):
    """What a task needs while it runs; it starts only where this fits."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cpu: float = Field(default=1.0, ge=0, le=1024)
    memory_mb: int = Field(default=0, ge=0, le=10_000_000)
    gpu: int = Field(default=0, ge=0, le=64)


class TaskSpec(BaseModel):
    """A validated task request."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    task_type: Name
    model: Name | None = None
    input: Any = None
    inputs: list[Any] | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    priority: Priority = 5
    resources: Resources | None = Field(
        default=None, description="what the task needs; default: its task type's default"
    )
    timeout_s: float | None = Field(default=None, gt=0, le=7 * 24 * 3600)
    max_retries: int = Field(default=0, ge=0, le=100)
    idempotency_key: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_input_form(self) -> TaskSpec:
        if self.input is not None and self.inputs is not None:
            raise ValueError("give either 'input' or 'inputs', not both")
        return self

    def payload(self) -> Any:
        """The input the handler sees: ``inputs`` if given, else ``input``."""
        return self.inputs if self.inputs is not None else self.input


_TOP_LEVEL = frozenset(TaskSpec.model_fields)


def pydantic_details(
    exc: ValidationError, prefix: tuple[str | int, ...] = ()
) -> list[errors.ErrorDetail]:
    """Turn a pydantic ValidationError into our ``[{"loc", "msg"}]`` details."""
    details: list[errors.ErrorDetail] = []
    for err in exc.errors(include_url=False, include_context=False, include_input=False):
        loc = [*prefix, *err["loc"]]
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = f"unknown field {loc[-1]!r}"
        details.append({"loc": loc, "msg": msg})
    return details


def summarize(problems: list[errors.ErrorDetail], limit: int = 5) -> str:
    """``loc: msg; loc: msg`` for the first few problems (the details carry all of them)."""
    parts = [
        f"{'.'.join(str(p) for p in d['loc']) or 'body'}: {d['msg']}" for d in problems[:limit]
    ]
    more = len(problems) - limit
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def _depth(value: Any, limit: int) -> int:
    """Nesting depth of a JSON value, stopping early once past ``limit``."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    deepest = 0
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > limit:
            return deepest
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return deepest


def parse_task_spec(
    raw: Any,
    param_fields: Callable[[str], Collection[str] | None] | None = None,
    *,
    max_depth: int = 32,
    check_params: Callable[[str, dict[str, Any]], list[errors.ErrorDetail]] | None = None,
) -> TaskSpec:
    """Validate ``raw`` (decoded JSON) into a TaskSpec.

    Args:
        raw: the decoded request body.
        param_fields: ``param_fields(task_type)`` returns the params that type declares, or
            None if the type is unknown (then only the structural checks run here).
        max_depth: bound on the nesting depth of the whole body.
        check_params: ``check_params(task_type, params)`` lists the params' problems, so
            they are reported together with the spec's own.

    Raises:
        errors.ValidationError: with every problem found, each with its location.
    """
    if not isinstance(raw, dict):
        raise errors.ValidationError(
            "task spec must be a JSON object",
            details=[{"loc": [], "msg": f"expected an object, got {type(raw).__name__}"}],
        )
    if not raw:
        raise errors.ValidationError(
            "task spec is empty", details=[{"loc": ["task_type"], "msg": "field required"}]
        )
    if _depth(raw, max_depth) > max_depth:
        raise errors.ValidationError(
            f"task spec is nested deeper than {max_depth} levels",
            details=[{"loc": ["input"], "msg": f"nesting deeper than {max_depth} levels"}],
        )
    body = dict(raw)
    extra = [k for k in body if k not in _TOP_LEVEL]
    problems: list[errors.ErrorDetail] = []
    task_type = body.get("task_type")
    if param_fields is not None and isinstance(task_type, str) and param_fields(task_type) is None:
        problems.append({"loc": ["task_type"], "msg": f"unknown task type {task_type!r}"})
    if extra:
        declared = param_fields(task_type) if param_fields and isinstance(task_type, str) else None
        params = body.get("params")
        if params is None:
            params = {}
        if not isinstance(params, dict):
            problems.append({"loc": ["params"], "msg": "params must be an object"})
            params = {}
        else:
            params = dict(params)
        for key in extra:
            if declared is not None and key in declared:
                if key in params:
                    problems.append(
                        {"loc": [key], "msg": f"{key!r} given both at top level and in params"}
                    )
                params[key] = body.pop(key)
            else:
                body.pop(key)
                problems.append({"loc": [key], "msg": f"unknown field {key!r}"})
        body["params"] = params
    try:
        spec = TaskSpec.model_validate(body)
    except ValidationError as exc:
        problems.extend(pydantic_details(exc))
        spec = None
    params_given = body.get("params", {})
    if (
        check_params is not None
        and isinstance(task_type, str)
        and isinstance(params_given, dict)
        and (param_fields is None or param_fields(task_type) is not None)
    ):
        problems.extend(check_params(task_type, params_given))
    if problems or spec is None:
        raise errors.ValidationError("invalid task spec: " + summarize(problems), details=problems)
    return spec
