"""What a model worker is to its pool, whatever carries the calls to it (a child process, a
Ray actor): :class:`ModelWorker`, started by a :class:`WorkerLauncher`."""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import Any, ClassVar

__all__ = ["ModelWorker", "WorkerGone", "WorkerLauncher"]


class WorkerGone(Exception):
    """The worker a call or a handshake went to is gone (exited, killed, its actor died)."""


class ModelWorker(abc.ABC):
    """One model copy serving one call at a time, whatever carries the calls to it.

    Used only by its pool's worker thread, except ``alive``, ``pid`` and ``info``, which the
    pool's introspection reads. ``busy`` and ``busy_until`` are the pool's bookkeeping.
    """

    def __init__(self, index: int) -> None:
        self.index = index
        self.info: dict[str, Any] = {}  # the hello of a successful handshake
        self.busy = False  # a call is in flight (set under the pool's lock; tests read it)
        self.busy_until = 0.0  # when that call is predicted to end (time.monotonic())

    @property
    @abc.abstractmethod
    def pid(self) -> int:
        """The serving process's id (for logs, errors and stats)."""

    @abc.abstractmethod
    def ready(self, timeout: float) -> dict[str, Any]:
        """Wait up to ``timeout`` s for the model to load; the replica's hello (``ok`` or
        ``error``). Raises WorkerGone when it exited or did not load in time."""

    @abc.abstractmethod
    def alive(self) -> bool:
        """Whether it can take a call (cheap: the pool asks before every call)."""

    @abc.abstractmethod
    def call(self, header: Mapping[str, Any]) -> tuple[dict[str, Any], bytes]:
        """One batch in, ``(reply header, payload)`` out. Raises WorkerGone when it died."""

    @abc.abstractmethod
    def exit_status(self) -> str:
        """How it ended, for errors and logs (``code -9``, ``Ray actor died: ...``)."""

    @abc.abstractmethod
    def begin_stop(self) -> None:
        """Ask it to stop without waiting, so that several replicas stop side by side."""

    @abc.abstractmethod
    def stop(self, timeout: float = 5.0) -> None:
        """Stop it (gracefully where the kind allows) and wait until it is gone."""

    @abc.abstractmethod
    def reap(self) -> None:
        """Kill one found dead or hung and wait for it, so nothing of it lingers."""


class WorkerLauncher(abc.ABC):
    """Starts a pool's workers; one launcher per pool, opened and closed with it."""

    kind: ClassVar[str]  # what GET /v1/models shows as the pool's replica_kind

    @abc.abstractmethod
    def open(self) -> None:
        """Before the pool's first start (a launcher that needs a connection makes it here)."""

    @abc.abstractmethod
    def spawn(self, model: str, index: int, hello: Mapping[str, Any]) -> ModelWorker:
        """Start replica ``index`` of ``model`` loading ``hello`` (``entry``, ``cache_dir``);
        returns at once, so that a pool's replicas load in parallel."""

    @abc.abstractmethod
    def close(self) -> None:
        """After the pool's last replica stopped; undoes :meth:`open`."""
