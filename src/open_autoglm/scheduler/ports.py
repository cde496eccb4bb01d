"""What the scheduler's adapter needs from the rest of the platform: storage and an observer."""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any, Protocol

from open_autoglm.scheduler.live_task import LiveTask
from open_autoglm.spec.task import TaskStatus

__all__ = ["SchedulerObserver", "StorageLike"]


class StorageLike(Protocol):
    """The storage hub as the scheduler uses it: group-committed writes and reads by id."""

    def write(self, w: Any, *, lazy: bool = False) -> Future[Any]: ...

    def write_many(self, writes: list[Any], *, lazy: bool = False) -> Future[list[Any]]: ...

    def get_task(self, task_id: str) -> dict[str, Any]: ...


class SchedulerObserver(Protocol):
    """Receives what metrics and event streams need; all calls are cheap and non-blocking.

    ``on_transition`` is always called with the scheduler's lock held, so calls never
    overlap; ``on_event`` comes from executor threads.
    """

    def on_transition(
        self, task: LiveTask, old: TaskStatus | None, new: TaskStatus, now: float
    ) -> None: ...

    def on_event(self, task_id: str, kind: str, data: dict[str, Any]) -> None: ...
