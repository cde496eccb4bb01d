"""A model served by a pool of workers: one model copy and one torch thread per worker.

On CPU two batches in two threads of one process fight over the GIL (tokenising, pooling,
Python glue between ops) and with the HTTP event loop; two processes with one thread each do
not. :class:`WorkerPool` starts ``replicas`` workers through a
:class:`~open_autoglm.executors.workers.base.WorkerLauncher` (child processes by default, Ray
actors on the ray backend) that each load the model through the same
:class:`~open_autoglm.ml.text.model_loader.TextModelLoader` as the in-process path, and then
serves batches: the handler thread in the server hands texts to the pool and waits (GIL
released) until the vectors come back.

A worker that dies (killed, out of memory) fails only the batch it was running, with an error
naming it, and is restarted in the background. ``close()`` (called when the model cache evicts
the pool) stops every worker.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from open_autoglm.errors import TaskFailedError, UnavailableError, ValidationError
from open_autoglm.executors.replica_dispatch import DispatchPolicy
from open_autoglm.executors.workers.base import ModelWorker, WorkerGone, WorkerLauncher
from open_autoglm.executors.workers.codec import Op
from open_autoglm.executors.workers.process import ProcessLauncher
from open_autoglm.executors.workers.split_merge import (
    WorkerRequest,
    cut,
    error_from,
    joined,
    split_by_length,
    split_reply,
    vectors_into,
)
from open_autoglm.futures import Promise

__all__ = ["WORKER_ROLES", "WorkerPool"]

log = logging.getLogger(__name__)

# The model roles a pool serves.
WORKER_ROLES = ("embedding", "text-classification")


class WorkerPool:
    """A model served by ``replicas`` replicas (embedding or classification): worker
    processes, or whatever ``launcher`` starts (Ray actors on the ray backend).

    Quacks like the in-process wrapper for the task handlers: ``role``, ``memory_bytes``,
    ``embed_with_usage`` (numpy float32 rows) and ``classify``; ``embed_many`` submits several
    requests at once and answers each on its own.

    Dispatch: callers append requests to one queue; each replica has a worker thread that,
    when its replica is free, takes its share of the compatible waiting requests and sends
    them as one call. The share (:class:`~open_autoglm.executors.replica_dispatch.
    DispatchPolicy`, from a cost model of the pool's own calls) lets this replica and the
    busy ones finish together: all of it when the others are busy for long, the shorter half
    when another is free too. Each request is answered the moment its own call returns, so a
    replica that finishes early hands its results back (and its clients can send the next
    requests) while the other is still computing. A request with several texts is split by
    length into one request per replica first, so one big call still uses every free core.

    Args:
        name: the model's registry name (for errors and logs).
        entry: what TextModelLoader takes (local ``source``, ``dtype``, ``options``...).
        replicas: number of replicas (>= 1), one torch thread each.
        cache_dir: the loader's cache directory (ONNX exports, converted models).
        start_timeout_s: how long a replica may take to import and load the model.
        max_merge: at most this many texts in one call.
        launcher: starts the replicas (default: :class:`ProcessLauncher`); the pool opens it
            first and closes it after its last replica stopped, also when starting fails.
        on_progress: called with each step of the start ("replica 1/2 ready after 3.1 s").
    """

    def __init__(
        self,
        name: str,
        entry: Mapping[str, Any],
        *,
        replicas: int,
        cache_dir: Path,
        start_timeout_s: float = 300.0,
        max_merge: int = 128,
        launcher: WorkerLauncher | None = None,
        on_progress: Callable[[str], None] | None = None,
    ) -> None:
        if replicas < 1:
            raise ValidationError("a replica pool needs at least one replica")
        self.name = name
        self.entry = dict(entry)
        self.role = _role_of(self.entry)
        self.size = replicas
        self.cache_dir = Path(cache_dir)
        self.start_timeout_s = start_timeout_s
        self.restarts = 0
        self.batches = 0
        self.texts = 0
        self.busy_seconds = 0.0  # summed over replicas: wall time with a call in flight
        self.max_merge = max_merge
        self.policy = DispatchPolicy()
        self._pending: list[WorkerRequest] = []  # oldest first
        self._free = 0  # worker threads waiting for work
        self._all: dict[int, ModelWorker] = {}
        self._lock = threading.Condition()
        self._closed = False
        self._restart_error: str | None = None
        self.on_progress = on_progress
        self.launcher = launcher or ProcessLauncher()
        self.launcher.open()
        started: list[ModelWorker] = []
        t0 = time.monotonic()
        try:
            for i in range(replicas):  # all start before any is waited for: they load in parallel
                started.append(self._spawn(i))
            self._progress(f"{replicas} replica(s) started, loading")
            for n, replica in enumerate(started, 1):
                self._handshake(replica)
                self._progress(
                    f"replica {n}/{replicas} ready after {time.monotonic() - t0:.1f} s"
                    + (f" (tuning {t})" if (t := replica.info.get("tuning")) else "")
                )
        except BaseException:
            for replica in started:
                replica.stop(timeout=1.0)
            self.launcher.close()
            raise
        self._all = {replica.index: replica for replica in started}
        self._workers = [
            threading.Thread(
                target=self._work, args=(replica,), name=f"replica-{name}-{replica.index}",
                daemon=True,
            )
            for replica in started
        ]  # fmt: skip
        for worker in self._workers:
            worker.start()

    # -- what handlers call ------------------------------------------------------------------

    @property
    def memory_bytes(self) -> int:
        """Every replica holds its own copy of the weights; all of them count."""
        with self._lock:
            per = max((int(r.info.get("memory_bytes", 0)) for r in self._all.values()), default=0)
        return per * self.size

    @property
    def dimension(self) -> int:
        with self._lock:
            return int(next(iter(self._all.values())).info.get("dimension", 0))

    def embed_many(
        self,
        batches: Sequence[Sequence[str]],
        *,
        normalize: bool | None = None,
        pooling: str | None = None,
    ) -> list[Future[tuple[Any, list[int]]]]:
        """Submit several embedding requests at once; each future resolves on its own.

        Handing them over together lets the free replicas split them by length; answering
        each as soon as its call returns lets its caller go on without waiting for the rest.
        """
        promises = self._submit(Op.EMBED, [list(texts) for texts in batches], (normalize, pooling))
        out: list[Future[tuple[Any, list[int]]]] = []
        for p in promises:
            q: Promise[tuple[Any, list[int]]] = Promise()
            p.add_done_callback(functools.partial(vectors_into, q))
            out.append(q)
        return out

    def embed_with_usage(
        self,
        texts: Sequence[str],
        *,
        normalize: bool | None = None,
        pooling: str | None = None,
    ) -> tuple[Any, list[int]]:
        """Vectors as a float32 numpy array (len(texts), dim) and each text's token count."""
        (future,) = self.embed_many([texts], normalize=normalize, pooling=pooling)
        return future.result()

    def embed(self, texts: Sequence[str], **kwargs: Any) -> Any:
        return self.embed_with_usage(texts, **kwargs)[0]

    def classify(self, texts: Sequence[str], *, top_k: int | None = 1) -> list[Any]:
        (promise,) = self._submit(Op.CLASSIFY, [list(texts)], (top_k,))
        header, _ = promise.result()
        predictions: list[Any] = header["predictions"]
        return predictions

    # -- introspection -----------------------------------------------------------------------

    def pids(self) -> list[int]:
        with self._lock:
            return [self._all[i].pid for i in sorted(self._all)]

    def stats(self) -> dict[str, Any]:
        with self._lock:
            alive = sum(1 for r in self._all.values() if r.alive())
            threads = sorted({int(r.info.get("threads", 0)) for r in self._all.values()})
            infos = [r.info for r in self._all.values()]
        # What each replica measured at load (embedding models; two replicas may differ).
        packs = sorted({p for i in infos if (p := i.get("pack_tokens"))})
        linears = sorted({v for i in infos if (v := i.get("linear"))})
        return {
            "replicas": self.size,
            "replica_kind": self.launcher.kind,
            "alive": alive,
            "restarts": self.restarts,
            "batches": self.batches,
            "texts": self.texts,
            "busy_seconds": round(self.busy_seconds, 3),
            "threads_per_replica": threads[0] if len(threads) == 1 else threads,
            "pack_tokens": (packs[0] if len(packs) == 1 else packs) or None,
            "linear": (linears[0] if len(linears) == 1 else linears) or None,
        }

    def close(self) -> None:
        """Stop every replica (the model cache calls this on eviction)."""
        with self._lock:
            self._closed = True
            replicas = list(self._all.values())
            self._all.clear()
            orphans, self._pending = self._pending, []
            self._lock.notify_all()
        for request in orphans:  # the cache never evicts a model in use; be safe anyway
            request.promise.set_exception(UnavailableError(f"model {self.name!r} was unloaded"))
        for replica in replicas:  # all are asked first, so they exit side by side
            replica.begin_stop()
        for replica in replicas:
            replica.stop()
        self.launcher.close()
        log.info("model %s: stopped %d replicas", self.name, len(replicas))

    # -- dispatch ----------------------------------------------------------------------------

    def _submit(
        self, op: Op, batches: list[list[str]], key: tuple[Any, ...]
    ) -> list[Promise[tuple[dict[str, Any], bytes]]]:
        """Queue one request per batch (split by length when several replicas could share it)."""
        promises: list[Promise[tuple[dict[str, Any], bytes]]] = []
        queued: list[WorkerRequest] = []
        for texts in batches:
            if self.size > 1 and len(texts) > 1:
                parts = split_by_length(texts, self.size)
                requests = [WorkerRequest(op, [texts[i] for i in idx], key) for idx in parts]
                promises.append(joined(op, parts, requests, len(texts)))
                queued.extend(requests)
            else:
                request = WorkerRequest(op, texts, key)
                promises.append(request.promise)
                queued.append(request)
        with self._lock:
            if self._closed:
                raise UnavailableError(f"model {self.name!r} was unloaded")
            if self._restart_error and not self._all:
                raise UnavailableError(
                    f"model {self.name!r}: no replica is running ({self._restart_error})"
                )
            self._pending.extend(queued)
            if self._free:
                self._lock.notify(min(self._free, len(queued)))
        return promises

    def _window(self) -> list[WorkerRequest]:
        """The oldest waiting requests compatible with the oldest one, up to ``max_merge``
        texts (at least one request). Called with the lock held."""
        lead = self._pending[0]
        window: list[WorkerRequest] = []
        size = 0
        for request in self._pending:
            if request.op == lead.op and request.key == lead.key:
                if window and size + len(request.texts) > self.max_merge:
                    break
                window.append(request)
                size += len(request.texts)
        return window

    def _others_free_in(self, replica: ModelWorker, now: float) -> list[float]:
        """Seconds until each other live replica is free (0: free now)."""
        return [
            max(0.0, r.busy_until - now) if r.busy else 0.0
            for r in self._all.values()
            if r is not replica
        ]

    def _take_share(self, replica: ModelWorker) -> list[WorkerRequest]:
        """This worker's share of the waiting requests compatible with the oldest one.

        The window (see :meth:`_window`) is sorted by text length and this worker takes the
        shortest run of the cost the policy gives it (all of it when the other replicas are
        busy for longer than it takes); the others take the rest when they are free.
        Called with the lock held.
        """
        window = self._window()
        if len(window) > 1:
            costs = [r.cost for r in window]
            total = sum(costs)
            share = self.policy.share(total, self._others_free_in(replica, time.monotonic()))
            if share < total:
                order = sorted(range(len(window)), key=lambda i: costs[i] / len(window[i].texts))
                mine = cut(order, costs, share, 2)[0]
                window = [window[i] for i in sorted(mine)]
        taken = {id(r) for r in window}
        self._pending = [r for r in self._pending if id(r) not in taken]
        return window

    def _work(self, replica: ModelWorker) -> None:
        """A replica's worker thread: take a share of the queue, call, answer; restart on death."""
        while True:
            with self._lock:
                self._free += 1
                while not self._pending and not self._closed:
                    self._lock.wait()
                if self._closed:
                    self._free -= 1
                    return
                group = self._take_share(replica)
                self._free -= 1
                if self._pending and self._free:  # more than this share is waiting
                    self._lock.notify()
                replica.busy = True
                cost = sum(r.cost for r in group)
                replica.busy_until = self.policy.predicted_end(time.monotonic(), cost)
            if not replica.alive():  # died while idle: restart first; no request is lost
                with self._lock:
                    self._pending[:0] = group
                    replica.busy = False
                    self._lock.notify()  # a free worker takes it while this one restarts
                next_replica = self._replace(replica)
            else:
                next_replica = self._run(replica, group, cost)
            if next_replica is None:
                return
            replica = next_replica

    def _run(
        self, replica: ModelWorker, group: list[WorkerRequest], cost: float
    ) -> ModelWorker | None:
        """One call for ``group`` (of ``cost`` in all); returns the replica to go on with
        (None: stop)."""
        lead = group[0]
        texts = [t for r in group for t in r.texts] if len(group) > 1 else lead.texts
        extra: dict[str, Any] = (
            {"normalize": lead.key[0], "pooling": lead.key[1]}
            if lead.op is Op.EMBED
            else {"top_k": lead.key[0]}
        )
        start = time.perf_counter()
        replies: list[tuple[dict[str, Any], bytes] | BaseException]
        dead = False
        try:
            header, payload = replica.call({"op": lead.op, "texts": texts, **extra})
            replies = split_reply(header, payload, group)
        except WorkerGone:
            replies = [
                TaskFailedError(
                    f"model {self.name!r}: replica {replica.index} (pid {replica.pid}) exited "
                    f"({replica.exit_status()}) while running this batch; it is being "
                    "restarted"
                )
            ] * len(group)
            dead = True
        except BaseException as exc:  # never leave a caller waiting; the stream may be torn
            replies = [exc] * len(group)
            dead = True
        busy = time.perf_counter() - start
        with self._lock:
            replica.busy = False
            self.batches += 1
            self.texts += len(texts)
            self.busy_seconds += busy
            if not dead:
                self.policy.finished(cost, busy)
        for request, answer in zip(group, replies, strict=True):
            if isinstance(answer, BaseException):
                request.promise.set_exception(answer)
            else:
                request.promise.set_result(answer)
        return self._replace(replica) if dead else replica

    def _replace(self, dead: ModelWorker) -> ModelWorker | None:
        """Reap a dead replica and start its successor in this worker's thread (the other
        workers go on serving); returns it, or None when the pool closed or it did not start."""
        with self._lock:
            if self._all.get(dead.index) is dead:
                del self._all[dead.index]
            closed = self._closed
            if not closed:
                self.restarts += 1
        dead.reap()
        if closed:
            return None
        log.warning(
            "model %s: replica %d (pid %d) died (%s); restarting",
            self.name,
            dead.index,
            dead.pid,
            dead.exit_status(),
        )
        try:
            replica = self._spawn(dead.index)
            self._handshake(replica)
        except Exception as exc:
            log.exception("model %s: replica %d did not restart", self.name, dead.index)
            with self._lock:
                self._restart_error = str(exc)
                orphans: list[WorkerRequest] = []
                if not self._all:  # nobody left to serve what waits
                    orphans, self._pending = self._pending, []
            for request in orphans:
                request.promise.set_exception(
                    UnavailableError(f"model {self.name!r}: no replica is running ({exc})")
                )
            return None
        with self._lock:
            if not self._closed:
                self._all[dead.index] = replica
                self._restart_error = None
                return replica
        replica.stop()
        return None

    # -- replica start -----------------------------------------------------------------------

    def _progress(self, step: str) -> None:
        """Say how the start goes: in the log, and to ``on_progress`` (``/readyz``)."""
        log.info("loading model %s: %s", self.name, step)
        if self.on_progress is not None:
            self.on_progress(step)

    def _spawn(self, index: int) -> ModelWorker:
        hello = {"entry": self.entry, "cache_dir": str(self.cache_dir)}
        return self.launcher.spawn(self.name, index, hello)

    def _handshake(self, replica: ModelWorker) -> None:
        try:
            reply = replica.ready(self.start_timeout_s)
        except WorkerGone:
            raise UnavailableError(
                f"model {self.name!r}: replica {replica.index} exited while loading "
                f"({replica.exit_status()}); see the server log"
            ) from None
        if not reply.get("ok"):
            replica.stop(timeout=1.0)
            raise error_from(reply.get("error") or {})
        replica.info = reply
        log.info(
            "model %s: replica %d ready (%s, pid %d, %d torch thread(s))",
            self.name,
            replica.index,
            self.launcher.kind,
            replica.pid,
            reply.get("threads", 0),
        )


def _role_of(entry: Mapping[str, Any]) -> str:
    from open_autoglm.ml.text.model_loader import TextModelLoader  # imports no torch

    role = TextModelLoader.role_of(entry).value
    if role not in WORKER_ROLES:
        raise ValidationError(
            f"model {entry.get('name')!r}: replicas serve only {list(WORKER_ROLES)}"
        )
    return role
