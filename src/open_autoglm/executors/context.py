"""TaskContext implementations: in-process (threads) and the inline one used by tests."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel

from open_autoglm.errors import TaskCancelledError, TaskTimeoutError

__all__ = ["InlineContext", "ThreadContext"]

# Guards the lazy creation of cancellation Events: a ThreadContext is built per task, and a
# threading.Event (a Condition inside) per task cost more than running an echo handler.
_EVENT_LOCK = threading.Lock()


class ThreadContext:
    """Context for a handler running in a worker thread of this process."""

    def __init__(
        self,
        *,
        task_id: str,
        task_type: str,
        model: str | None,
        input: Any,
        params: BaseModel,
        metadata: Mapping[str, Any],
        cpu_threads: int,
        emit: Callable[[str, dict[str, Any]], None],
        save_artifact: Callable[..., dict[str, Any]],
        load_artifact: Callable[[str], bytes],
        services: Mapping[str, Any],
    ) -> None:
        self.task_id = task_id
        self.task_type = task_type
        self.model = model
        self.input = input
        self.params = params
        self.metadata = metadata
        self.cpu_threads = cpu_threads
        self._emit = emit
        self._save = save_artifact
        self._load = load_artifact
        self._services = services
        self.cancel_reason = ""
        self._cancelled = False
        self._event: threading.Event | None = None  # made only if the handler waits on it
        self.artifacts: list[dict[str, Any]] = []

    def progress(self, fraction: float, message: str = "", **data: Any) -> None:
        self._emit(
            "progress",
            {"fraction": max(0.0, min(1.0, float(fraction))), "message": message, **data},
        )

    def log(self, message: str, level: str = "info") -> None:
        self._emit("log", {"level": level, "message": message})

    def cancel(self, reason: str) -> None:
        """Ask the handler to stop (it sees this through the methods below)."""
        with _EVENT_LOCK:
            self.cancel_reason = reason
            self._cancelled = True
            event = self._event
        if event is not None:
            event.set()

    @property
    def cancel_event(self) -> threading.Event:
        """An Event set on cancellation, for handlers that wait on it (made on first use)."""
        with _EVENT_LOCK:
            if self._event is None:
                self._event = threading.Event()
                if self._cancelled:
                    self._event.set()
            return self._event

    def is_cancelled(self) -> bool:
        return self._cancelled

    def check_cancelled(self) -> None:
        if self._cancelled:
            if self.cancel_reason == "timeout":
                raise TaskTimeoutError("task exceeded its timeout")
            raise TaskCancelledError(f"task {self.cancel_reason or 'cancelled'}")

    def wait_cancelled(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True if cancellation arrived first."""
        return self.cancel_event.wait(seconds)

    def save_artifact(self, data: bytes, *, media_type: str, name: str = "") -> dict[str, Any]:
        meta = self._save(data, media_type=media_type, name=name, task_id=self.task_id)
        self.artifacts.append(meta)
        return meta

    def load_artifact(self, artifact_id: str) -> bytes:
        return self._load(artifact_id)

    def service(self, name: str) -> Any:
        return self._services[name]


class InlineContext(ThreadContext):
    """A context for calling a handler directly (tests, notebooks): events are collected.

    ``artifact_store`` may be a StorageHub (its ``put_artifact``/``read_artifact`` are used)
    or None, in which case artifacts are kept in memory.
    """

    def __init__(
        self,
        *,
        task_type: str = "inline",
        input: Any = None,
        params: BaseModel | None = None,
        model: str | None = None,
        services: Mapping[str, Any] | None = None,
        cpu_threads: int = 1,
        task_id: str = "inline",
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        from open_autoglm.tasks.base import EmptyParams

        self.events: list[tuple[str, dict[str, Any]]] = []
        self.blobs: dict[str, bytes] = {}
        super().__init__(
            task_id=task_id,
            task_type=task_type,
            model=model,
            input=input,
            params=params if params is not None else EmptyParams(),
            metadata=metadata or {},
            cpu_threads=cpu_threads,
            emit=lambda kind, data: self.events.append((kind, data)),
            save_artifact=self._keep,
            load_artifact=self._fetch,
            services=services or {},
        )

    def _keep(
        self, data: bytes, *, media_type: str, name: str = "", task_id: str = ""
    ) -> dict[str, Any]:
        import hashlib

        sha = hashlib.sha256(data).hexdigest()
        self.blobs[sha] = data
        return {"id": sha, "sha256": sha, "size": len(data), "media_type": media_type, "name": name}

    def _fetch(self, artifact_id: str) -> bytes:
        from open_autoglm.errors import NotFoundError

        try:
            return self.blobs[artifact_id]
        except KeyError:
            raise NotFoundError(f"artifact {artifact_id} not found") from None
