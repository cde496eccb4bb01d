"""The replica zygote: one process with torch, transformers and the loader imported, from
which model replicas are forked instead of each starting a fresh interpreter.

A replica started as ``python -m open_autoglm.executors.workers.child`` spends most of its
start importing torch and transformers, and then transformers' model and tokenizer modules
on its first load, seconds of CPU each, and the replicas of a pool all do it at once on the
same cores. The zygote does it once, early (the server starts it in the background when it
starts, so it never delays ``/readyz``), and each replica is then a ``fork()`` of it that
only loads its weights. The replica runs exactly the worker loop of ``child.py`` with its
frames on fds 0 and 1, so the pool cannot tell the difference.

Protocol on the zygote's control socket (a Unix socketpair, fds passed with ``SCM_RIGHTS``):

- ``F`` with two fds (the replica's stdin read end, stdout write end): fork a replica; the
  reply is its pid (8 bytes) with a pidfd of it, opened before the zygote could reap it, so
  the server can watch and kill exactly that process.
- ``S<pid>``: the replica's exit code, as ``Popen.returncode`` gives it (``-9``: SIGKILL),
  or nothing while it runs or once forgotten.

The zygote exits when the socket closes (the server stopped or died). Only Linux has
pidfds: elsewhere, and whenever the zygote cannot start, replicas start as before.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import logging
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import traceback
from typing import Any

from open_autoglm.executors.workers.codec import WORKER_ENV

__all__ = ["PRELOAD", "Zygote", "ZygoteProcess", "ZygoteUnavailable", "shared_zygote"]

log = logging.getLogger(__name__)

ZYGOTE_MODULE = "open_autoglm.executors.workers.zygote"

PRELOAD = (
    "torch",
    "transformers",
    # Imported lazily by the first from_pretrained of a process: seconds more, once here.
    "transformers.modeling_utils",
    "transformers.models.auto.modeling_auto",
    "transformers.models.auto.tokenization_auto",
    "transformers.models.bert.modeling_bert",
    "transformers.models.bert.tokenization_bert",
    "open_autoglm.ml.text.model_loader",
    "open_autoglm.ml.text.embedding",
    "open_autoglm.ml.text.classification",
    "open_autoglm.ml.text.linear",
    "open_autoglm.ml.text.tuning",
    "open_autoglm.executors.workers.child",
)
"""What the zygote imports before forking anything (a module missing here is skipped)."""

_PID = struct.Struct("<q")


class ZygoteUnavailable(Exception):
    """The zygote cannot fork (not Linux, did not start, or exited); start a process instead."""


class ZygoteProcess:
    """A replica forked by the zygote, with the part of ``subprocess.Popen`` a
    :class:`~open_autoglm.executors.workers.process.ProcessWorker` uses."""

    def __init__(self, zygote: Zygote, pid: int, pidfd: int, stdin: Any, stdout: Any) -> None:
        self.zygote = zygote
        self.pid = pid
        self.stdin = stdin
        self.stdout = stdout
        self.returncode: int | None = None
        self._pidfd = pidfd

    def _exited(self, timeout: float | None) -> bool:
        return bool(select.select([self._pidfd], [], [], timeout)[0])

    def poll(self) -> int | None:
        if self.returncode is None and self._exited(0):
            self.returncode = self.zygote.exit_code(self.pid)
            if self.returncode is None:  # the zygote is gone: it exited, that much is known
                self.returncode = -1
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None and not self._exited(timeout):
            raise subprocess.TimeoutExpired(f"replica {self.pid}", timeout or 0.0)
        code = self.poll()
        assert code is not None
        return code

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, OSError):
            signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)

    def __del__(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._pidfd)


class Zygote:
    """The server's side of the zygote: starts it, asks it to fork, asks exit codes.

    Thread-safe: pools restart replicas from their worker threads.
    """

    def __init__(self, preload: tuple[str, ...] = PRELOAD) -> None:
        self.preload = preload
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None

    @staticmethod
    def supported() -> bool:
        return hasattr(os, "pidfd_open") and hasattr(signal, "pidfd_send_signal")

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def start(self) -> None:
        """Start the zygote unless it runs; returns at once (it imports in the background)."""
        with self._lock:
            self._start()

    def _start(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            return
        if not self.supported():
            raise ZygoteUnavailable("no pidfd on this platform")
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", ZYGOTE_MODULE, str(theirs.fileno()), *self.preload],
                stdin=subprocess.DEVNULL,
                pass_fds=[theirs.fileno()],
                env={**os.environ, **WORKER_ENV},
            )
        except OSError as exc:
            ours.close()
            raise ZygoteUnavailable(f"the replica zygote did not start: {exc}") from exc
        finally:
            theirs.close()
        # It keeps the server's CPU policy (sched_policy.py): its imports yield to the server's
        # own start and to replicas computing; each fork gets the policy of a replica.
        self._sock = ours
        log.info("replica zygote started (pid %d), importing torch and transformers", self.pid)

    def fork(self, stdin_r: int, stdout_w: int) -> tuple[int, int]:
        """Fork a replica on these pipe ends; its (pid, pidfd). Waits while the zygote is
        still importing. Raises ZygoteUnavailable when it cannot."""
        with self._lock:
            try:
                self._start()
                assert self._sock is not None
                socket.send_fds(self._sock, [b"F"], [stdin_r, stdout_w])
                msg, fds, _, _ = socket.recv_fds(self._sock, _PID.size, 1)
            except OSError as exc:
                self._drop()
                raise ZygoteUnavailable(f"the replica zygote failed: {exc}") from exc
            if len(msg) != _PID.size or len(fds) != 1:
                for fd in fds:
                    os.close(fd)
                self._drop()
                raise ZygoteUnavailable("the replica zygote exited")
            return _PID.unpack(msg)[0], fds[0]

    def exit_code(self, pid: int) -> int | None:
        """A forked replica's exit code (None: running, unknown, or the zygote is gone)."""
        with self._lock:
            if self._sock is None:
                return None
            try:
                self._sock.sendall(b"S" + _PID.pack(pid))
                reply = self._sock.recv(_PID.size + 1)
            except OSError:
                return None
        if len(reply) != _PID.size + 1 or reply[:1] != b"1":
            return None
        return int(_PID.unpack(reply[1:])[0])

    def _drop(self) -> None:
        """Forget a zygote that failed (the next fork starts a new one)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._proc is not None:
            with contextlib.suppress(OSError):
                self._proc.kill()
            self._proc.wait()
            self._proc = None

    def close(self) -> None:
        """Stop the zygote (its replicas live on until their pools stop them)."""
        with self._lock:
            if self._sock is not None:
                self._sock.close()  # EOF: it exits
                self._sock = None
            if self._proc is not None:
                try:
                    self._proc.wait(5.0)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait()
                self._proc = None


_shared: Zygote | None = None
_shared_lock = threading.Lock()


def shared_zygote() -> Zygote:
    """The zygote of this process, shared by every pool (created, not started, on first use)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = Zygote()
            atexit.register(_shared.close)
        return _shared


# -- the zygote process ------------------------------------------------------------------------


def _preload(modules: list[str]) -> None:
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as exc:  # another architecture's module: its first load imports it
            print(f"replica zygote: not preloaded: {name}: {exc}", file=sys.stderr)


def _replica(sock: socket.socket, fds: list[int]) -> None:
    """In the forked child: frames on fds 0 and 1, then the worker loop; never returns."""
    code = 0
    try:
        sock.close()
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os.dup2(fds[0], 0)
        os.dup2(fds[1], 1)
        for fd in fds:
            os.close(fd)
        from open_autoglm.executors.workers.child import main

        main()
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os._exit(code)


def _reap(codes: dict[int, int]) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        codes[pid] = os.waitstatus_to_exitcode(status)


def _serve(sock: socket.socket) -> None:
    codes: dict[int, int] = {}  # exited replicas' codes, until the server asks
    while True:
        ready = select.select([sock], [], [], 1.0)[0]
        _reap(codes)
        if not ready:
            continue
        try:
            msg, fds, _, _ = socket.recv_fds(sock, 1 + _PID.size, 2)
        except OSError:
            return
        if not msg:
            return  # the server closed the socket or died
        if msg[:1] == b"F" and len(fds) == 2:
            pid = os.fork()
            if pid == 0:
                _replica(sock, fds)
            pidfd = os.pidfd_open(pid)
            for fd in fds:
                os.close(fd)
            socket.send_fds(sock, [_PID.pack(pid)], [pidfd])
            os.close(pidfd)
        elif msg[:1] == b"S" and len(msg) == 1 + _PID.size:
            (pid,) = _PID.unpack(msg[1:])
            _reap(codes)
            code = codes.pop(pid, None)
            sock.sendall(b"0" + _PID.pack(0) if code is None else b"1" + _PID.pack(code))
        else:
            for fd in fds:
                os.close(fd)


def main() -> None:
    """``python -m open_autoglm.executors.workers.zygote <socket fd> <module>...``."""
    sock = socket.socket(fileno=int(sys.argv[1]))
    _preload(sys.argv[2:])
    _serve(sock)


if __name__ == "__main__":
    main()
