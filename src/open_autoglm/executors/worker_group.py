"""The lifetime of a process task's worker and everything it starts (training ranks, Hogwild
workers, their forkserver): one process group, ended as one.

The worker is not daemonic, so it may start child processes the ordinary way; in exchange this
module does for it what multiprocessing does for daemons: it ends the worker's group when the
task is cancelled, and when this interpreter exits with workers still running.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from multiprocessing.connection import wait
from typing import Any

__all__ = ["become_group_leader", "end_group", "forget", "stop", "track"]

GRACE_S = 2.0  # between the worker's SIGTERM and its group's SIGKILL

_live: set[Any] = set()  # worker processes (multiprocessing.Process) running now
_lock = threading.Lock()
_exit_hook: Any = None


def become_group_leader() -> None:
    """In the worker, first thing: lead a new process group that its children join."""
    os.setpgid(0, 0)


def track(proc: Any) -> None:
    """Remember a started worker, to end it if this interpreter exits first."""
    global _exit_hook
    with _lock:
        _live.add(proc)
        if _exit_hook is None:
            from multiprocessing import util

            # exit priority >= 0 runs before multiprocessing joins its non-daemonic children
            _exit_hook = util.Finalize(None, _end_all, exitpriority=10)


def forget(proc: Any) -> None:
    """The worker has exited: end what it left behind and stop tracking it."""
    end_group(proc)
    with _lock:
        _live.discard(proc)


def stop(proc: Any, grace_s: float = GRACE_S) -> None:
    """SIGTERM the worker (its ``finally`` blocks stop its children), then SIGKILL its group
    after ``grace_s`` (without waiting here)."""
    if wait([proc.sentinel], 0):
        return  # it has exited: forget() ends what it left
    _signal(proc, signal.SIGTERM)
    timer = threading.Timer(grace_s, end_group, args=(proc,))
    timer.daemon = True
    timer.start()


def end_group(proc: Any) -> None:
    """SIGKILL the worker and every process left in its group."""
    if proc.pid is None:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # no group (yet): the worker alone, below
    _signal(proc, signal.SIGKILL)


def _signal(proc: Any, signum: int) -> None:
    # the sentinel says whether it exited without reaping it (the supervising thread joins it),
    # and a process that has not exited keeps its pid
    if proc.pid is not None and not wait([proc.sentinel], 0):
        try:
            os.kill(proc.pid, signum)
        except ProcessLookupError:
            pass


def _end_all() -> None:
    with _lock:
        procs = list(_live)
    for proc in procs:
        _signal(proc, signal.SIGTERM)
    deadline = time.monotonic() + GRACE_S
    pending = [proc.sentinel for proc in procs]
    while pending and (left := deadline - time.monotonic()) > 0:
        done = wait(pending, left)
        pending = [s for s in pending if s not in done]
    for proc in procs:
        end_group(proc)
