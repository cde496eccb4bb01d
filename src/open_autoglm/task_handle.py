"""One way to follow a task: :class:`TaskHandle`, from ``runtime.track(task_id)``.

A task is either live (the scheduler holds it until its final state is stored) or stored.
The handle hides which: ``future()`` resolves with the final task (with its ``result``)
either way, ``await handle`` gives the same in async code, and ``result(timeout)`` blocks.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Generator
from concurrent.futures import Future
from typing import Any

from open_autoglm.errors import TaskTakenOverError
from open_autoglm.futures import Promise
from open_autoglm.scheduler.live_task import LiveTask

__all__ = ["TaskHandle"]

Task = dict[str, Any]


class TaskHandle:
    """A task followed to its end.

    Args:
        task_id: the task.
        live: the scheduler's record while it runs (None: it is stored already). Looked up
            once, when the handle is made: made right after acceptance, it is still there.
        read: reads the task (with its result) as it stands, live or stored.
    """

    __slots__ = ("_read", "id", "live")

    def __init__(self, task_id: str, live: LiveTask | None, read: Callable[[str], Task]) -> None:
        self.id = task_id
        self.live = live
        self._read = read

    def future(self) -> Future[Task]:
        """The final task once it is stored (an online task: once it is answered). A task
        another server took over fails with TaskTakenOverError; ``result`` reads it instead."""
        if self.live is not None:
            return self.live.done
        return Promise.resolved(self._read(self.id))

    def add_done_callback(self, fn: Callable[[Future[Task]], Any]) -> None:
        self.future().add_done_callback(fn)

    def result(self, timeout: float | None = None) -> Task:
        """Block until the task's final state is stored; then that state, with ``result``.

        A task another server took over is read as stored (the state that counts); an online
        task answered before its record was stored is returned once the record is.
        """
        lt = self.live
        if lt is None:
            return self._read(self.id)
        try:
            final = lt.done.result(timeout)
        except TaskTakenOverError:
            return self._read(self.id)
        if lt.logged is not None:
            with contextlib.suppress(Exception):
                lt.logged.result(timeout)
        return final

    def __await__(self) -> Generator[Any, None, Task]:
        return asyncio.wrap_future(self.future()).__await__()
