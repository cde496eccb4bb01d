"""Model workers as child processes of the server, talking frames over their stdin/stdout."""

from __future__ import annotations

import contextlib
import logging
import os
import struct
import subprocess
import sys
import threading
from collections.abc import Mapping
from typing import Any

from open_autoglm.executors.sched_policy import compute_policy
from open_autoglm.executors.workers.base import ModelWorker, WorkerGone, WorkerLauncher
from open_autoglm.executors.workers.codec import WORKER_ENV, read_frame, write_frame
from open_autoglm.executors.workers.zygote import (
    Zygote,
    ZygoteProcess,
    ZygoteUnavailable,
    shared_zygote,
)

__all__ = ["ProcessLauncher", "ProcessWorker"]

log = logging.getLogger(__name__)

# The child's entry point (executors/workers/child.py).
CHILD_MODULE = "open_autoglm.executors.workers.child"


class ProcessWorker(ModelWorker):
    """A worker process (forked from the replica zygote, or ``python -m
    open_autoglm.executors.workers.child``) and its pipes."""

    def __init__(self, index: int, proc: subprocess.Popen[bytes] | ZygoteProcess) -> None:
        super().__init__(index)
        self.proc = proc

    @property
    def pid(self) -> int:
        return self.proc.pid

    def ready(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        timer = threading.Timer(timeout, self.proc.kill)
        timer.start()
        try:
            reply, _ = read_frame(self.proc.stdout)
        except (EOFError, OSError, struct.error):
            self.reap()
            raise WorkerGone from None
        finally:
            timer.cancel()
        return reply

    def alive(self) -> bool:
        return self.proc.poll() is None

    def call(self, header: Mapping[str, Any]) -> tuple[dict[str, Any], bytes]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            write_frame(self.proc.stdin, header)
            return read_frame(self.proc.stdout)
        except (EOFError, OSError, ValueError, struct.error):  # a torn pipe: the process died
            raise WorkerGone from None

    def exit_status(self) -> str:
        return f"code {self.proc.poll()}"

    def begin_stop(self) -> None:
        """EOF on the worker's stdin: its loop returns and the process exits."""
        with contextlib.suppress(OSError, ValueError):
            if self.proc.stdin is not None:
                self.proc.stdin.close()

    def stop(self, timeout: float = 5.0) -> None:
        proc = self.proc
        try:
            self.begin_stop()
            proc.wait(timeout)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait(timeout)
        if proc.stdout is not None:
            proc.stdout.close()

    def reap(self) -> None:
        self.proc.kill()
        self.proc.wait()


class ProcessLauncher(WorkerLauncher):
    """Workers as processes forked from the replica zygote (``zygote.py``; a fresh
    interpreter each where it cannot), talking frames over their stdin/stdout."""

    kind = "process"

    def open(self) -> None:
        """Nothing to connect to: workers are children of this process."""

    def __init__(self, zygote: Zygote | None = None, *, fork: bool = True) -> None:
        # fork=False: every replica a fresh interpreter (the zygote's fallback, and a baseline).
        self.zygote = (zygote or shared_zygote()) if fork else None

    def spawn(self, model: str, index: int, hello: Mapping[str, Any]) -> ModelWorker:
        proc: subprocess.Popen[bytes] | ZygoteProcess | None = (
            self._forked() if self.zygote is not None else None
        )
        if proc is None:
            proc = subprocess.Popen(
                [sys.executable, "-m", CHILD_MODULE],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env={**os.environ, **WORKER_ENV},
            )
        compute_policy(proc.pid)
        worker = ProcessWorker(index, proc)
        assert proc.stdin is not None
        try:
            write_frame(proc.stdin, hello)
        except OSError:
            pass  # the handshake reports the exit
        return worker

    def _forked(self) -> ZygoteProcess | None:
        """A replica forked from the zygote, or None (then a fresh interpreter, logged)."""
        assert self.zygote is not None
        to_child, to_us = os.pipe()  # the replica's stdin
        from_child, from_us = os.pipe()  # its stdout
        try:
            pid, pidfd = self.zygote.fork(to_child, from_us)
        except ZygoteUnavailable as exc:
            os.close(to_us)
            os.close(from_child)
            log.warning("replica starts without the zygote: %s", exc)
            return None
        finally:  # the replica holds its own copies now
            os.close(to_child)
            os.close(from_us)
        return ZygoteProcess(
            self.zygote, pid, pidfd, os.fdopen(to_us, "wb"), os.fdopen(from_child, "rb")
        )

    def close(self) -> None:
        """Nothing held beyond the workers, which the pool has stopped."""
