"""Diagnostic task types: ``echo`` (returns its input) and ``sleep`` (honours cancellation)."""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from open_autoglm.tasks.base import EmptyParams, TaskContext, TaskType

__all__ = ["SleepParams", "diagnostic_task_types"]


class SleepParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seconds: float = Field(default=1.0, ge=0, le=86_400, description="how long to sleep")


def _echo(ctx: TaskContext) -> Any:
    return ctx.input


def _sleep(ctx: TaskContext) -> Any:
    assert isinstance(ctx.params, SleepParams)
    seconds = ctx.params.seconds
    start = time.monotonic()
    deadline = start + seconds
    wait = getattr(ctx, "wait_cancelled", None)
    while (left := deadline - time.monotonic()) > 0:
        step = min(left, 0.5)
        if wait is not None:
            if wait(step):
                break
        else:
            time.sleep(step)
        if seconds >= 2:
            ctx.progress((time.monotonic() - start) / seconds)
    ctx.check_cancelled()
    return {"slept": round(time.monotonic() - start, 4)}


def diagnostic_task_types() -> list[TaskType]:
    return [
        TaskType(
            name="echo",
            handler=_echo,
            params_model=EmptyParams,
            description="Return the input unchanged (health checks, benchmarks).",
            default_resources={"cpu": 0.0},  # no real work: bounded by worker threads only
        ),
        TaskType(
            name="sleep",
            handler=_sleep,
            params_model=SleepParams,
            description="Sleep for params.seconds; stops early when cancelled.",
        ),
    ]
