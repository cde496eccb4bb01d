"""Wait for what a test is not told about: a task reaching a status over the API, a process exiting.

The timeouts are hang bounds, not speed claims: each wait returns as soon as its condition holds.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable
from typing import Any

import psutil

from open_autoglm.spec.task import TERMINAL_STATUSES

__all__ = ["alive_after", "gone", "wait_task"]


def wait_task(
    api: Any,
    task_id: str,
    *,
    timeout: float = 300.0,
    until: Collection[str] = TERMINAL_STATUSES,
    interval: float = 0.1,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Poll ``GET /v1/tasks/{task_id}`` until its status is in ``until``; return the task.

    Args:
        api: a ``TestClient`` (or anything with httpx's ``get``).
        until: the statuses to wait for; a terminal one by default.
        headers: sent with each request (an API key, say).
    """
    deadline = time.monotonic() + timeout
    task: dict[str, Any] = {}
    while time.monotonic() < deadline:
        task = dict(api.get(f"/v1/tasks/{task_id}", headers=headers).json())
        if task.get("status") in until:
            return task
        time.sleep(interval)
    raise AssertionError(f"task {task_id} never reached {sorted(until)}; last seen {task}")


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def alive_after(pids: Iterable[int], timeout: float = 60.0) -> list[int]:
    """Wait until every process in ``pids`` has exited (a zombie counts as exited).

    Returns the pids still running when ``timeout`` ran out: ``[]`` when all are gone.
    """
    deadline = time.monotonic() + timeout
    alive = [p for p in pids if _running(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [p for p in alive if _running(p)]
    return alive


def gone(pid: int, timeout: float = 10.0) -> bool:
    """Whether process ``pid`` exits (or is a zombie) within ``timeout`` seconds."""
    return not alive_after([pid], timeout)
