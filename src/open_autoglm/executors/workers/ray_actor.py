"""Model workers as Ray actors: what ``executor.backend = "ray"`` serves embeddings with.

An actor is what a worker process is (``executors/workers/process.py``), placed by Ray instead of
started as a child: one model copy and one torch thread, so it reserves one CPU
(``num_cpus=1``), runs one call at a time (``max_concurrency=1``), starts with the same thread
and offline environment, loads through the same :func:`~open_autoglm.executors.workers.child.
load_worker_model` and answers through the same ``serve``. Replies keep the process wire
format: a header dict and the vectors as raw little-endian float32 bytes, so the pool splits
and merges them unchanged and no numpy array is pickled.

The pool's dispatch, restarts and errors are the same for both kinds. How an actor's death
shows: a call in flight (or sent to a dead actor) raises Ray's ``RayActorError``, which fails
that batch; an actor that died while idle is seen before a call by its pid when it runs on this
node. On another node nothing cheap tells (Ray's state API needs the dashboard, and a named
actor lookup is cached by the driver), so the first call after such a death fails and the actor
is replaced.

The pool holds the process's Ray connection (``executors/ray_cluster.py``) from its start to
its close, so evicting the last model of a local Ray instance that nothing else uses stops it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import uuid
from collections.abc import Mapping
from typing import Any

from open_autoglm.config import ExecutorSettings
from open_autoglm.executors import ray_cluster
from open_autoglm.executors.sched_policy import compute_policy
from open_autoglm.executors.workers.base import ModelWorker, WorkerGone, WorkerLauncher
from open_autoglm.executors.workers.child import failure, load_worker_model, serve
from open_autoglm.executors.workers.codec import WORKER_ENV
from open_autoglm.storage.replicas import pid_alive

__all__ = ["ActorWorker", "RayLauncher"]

log = logging.getLogger(__name__)


class _WorkerActor:
    """The actor's body; made a Ray actor class on first use, so importing needs no Ray."""

    def __init__(self, entry: dict[str, Any], cache_dir: str) -> None:
        # A failed load is kept and reported by ready(), so the pool raises the same typed
        # error as for a process (a raising constructor would only say the actor died).
        self._model: Any = None
        try:
            self._model, self._hello = load_worker_model(entry, cache_dir)
        except Exception as exc:
            self._hello = failure(exc)
        else:
            import ray

            self._hello["node"] = ray.get_runtime_context().get_node_id()

    def ready(self) -> dict[str, Any]:
        return self._hello

    def serve(self, header: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
        try:
            return serve(self._model, header)
        except Exception as exc:
            return failure(exc), b""


@functools.cache
def _actor_class() -> Any:
    return ray_cluster.ray_module().remote(_WorkerActor)


class ActorWorker(ModelWorker):
    """One Ray actor serving the model; reached with ``ray.get(actor.serve.remote(...))``."""

    def __init__(self, index: int, actor: Any, name: str, driver_node: str) -> None:
        super().__init__(index)
        self.actor = actor
        self.name = name  # the actor's name in the job's namespace (ray.util.list_named_actors)
        self._driver_node = driver_node
        self._pid = 0
        self._local = False  # on this node: its pid says whether it still runs
        self._death: str | None = None

    @property
    def pid(self) -> int:
        return self._pid

    def ready(self, timeout: float) -> dict[str, Any]:
        ray = ray_cluster.ray_module()
        try:
            hello: dict[str, Any] = ray.get(self.actor.ready.remote(), timeout=timeout)
        except ray.exceptions.GetTimeoutError:
            self._death = f"not ready within {timeout:g} s; is a CPU free in the cluster?"
            self.reap()
            raise WorkerGone from None
        except ray.exceptions.RayActorError as exc:
            self._died(exc)
            raise WorkerGone from None
        self._pid = int(hello.get("pid") or 0)
        self._local = bool(hello.get("node")) and hello.get("node") == self._driver_node
        if self._local:
            compute_policy(self._pid)  # a local Ray instance inherits the server's policy
        return hello

    def alive(self) -> bool:
        if self._death is not None:
            return False
        if self._local and self._pid and not pid_alive(self._pid):
            self._death = "its process exited"
            return False
        return True

    def call(self, header: Mapping[str, Any]) -> tuple[dict[str, Any], bytes]:
        ray = ray_cluster.ray_module()
        try:
            reply, payload = ray.get(self.actor.serve.remote(dict(header)))
        except ray.exceptions.RayActorError as exc:
            self._died(exc)
            raise WorkerGone from None
        return reply, payload

    def exit_status(self) -> str:
        return self._death or "running"

    def begin_stop(self) -> None:
        """Nothing to wait for: :meth:`stop` kills at once."""

    def stop(self, timeout: float = 5.0) -> None:
        # No graceful path: an actor holds nothing to flush, and ray.kill frees its CPU now.
        self.reap()

    def reap(self) -> None:
        ray = ray_cluster.ray_module()
        with contextlib.suppress(Exception):  # already dead, or Ray is shutting down
            ray.kill(self.actor, no_restart=True)
        if self._death is None:
            self._death = "killed"

    def _died(self, exc: BaseException) -> None:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        self._death = f"Ray actor died: {type(exc).__name__}" + (
            f": {first[:200]}" if first else ""
        )


class RayLauncher(WorkerLauncher):
    """Workers as Ray actors on the process's Ray connection (joined or started by
    :func:`~open_autoglm.executors.ray_cluster.acquire` with ``settings``).

    Args:
        settings: the executor settings (``ray_address``, and the size of a local instance).
    """

    kind = "ray-actor"

    def __init__(self, settings: ExecutorSettings) -> None:
        self.settings = settings
        self._held = False
        self._node = ""

    def open(self) -> None:
        ray_cluster.acquire(self.settings)
        self._held = True
        self._node = str(ray_cluster.ray_module().get_runtime_context().get_node_id())

    def spawn(self, model: str, index: int, hello: Mapping[str, Any]) -> ModelWorker:
        # A unique name: a successor starts while its predecessor's name may not be free yet,
        # and several servers may share a cluster.
        name = f"autoglm-replica:{model}:{index}:{uuid.uuid4().hex[:8]}"
        actor = (
            _actor_class()
            .options(
                name=name,
                num_cpus=1,
                max_concurrency=1,
                runtime_env={"env_vars": dict(WORKER_ENV)},
            )
            .remote(dict(hello["entry"]), str(hello["cache_dir"]))
        )
        return ActorWorker(index, actor, name, self._node)

    def close(self) -> None:
        if self._held:  # a pool closes once, but a second close must not drop another's hold
            self._held = False
            ray_cluster.release()
