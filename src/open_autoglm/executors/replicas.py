"""Model replicas in worker processes: one model copy and one torch thread per process.

On CPU two batches in two threads of one process fight over the GIL (tokenising, pooling,
Python glue between ops) and with the HTTP event loop; two processes with one thread each do
not. :class:`ReplicaPool` starts ``replicas`` processes (``python -m
open_autoglm.executors.replicas``) that each load the model through the same
:class:`~open_autoglm.ml.text.model_loader.TextModelLoader` as the in-process path and then
serve batches: tokenise, length-bucket, forward, pool. The handler thread in the server takes
a free replica, writes the batch to its pipe and blocks in ``read`` (GIL released) until the
vectors come back.

Wire format, both directions, over the child's stdin/stdout: a frame is
``<u32 header length><u32 payload length><header JSON><payload bytes>``. Vectors travel as raw
little-endian float32 in the payload; nothing is pickled. The child's ``sys.stdout`` is sent
to stderr so a stray print cannot corrupt the stream.

A replica that dies (killed, out of memory) fails only the batch it was running, with an
error naming it, and is restarted in the background. ``close()`` (called when the model cache
evicts the pool) stops every replica.

What a replica is sits behind one seam, so the pool's dispatch serves every kind the same way:
a :class:`ReplicaLauncher` starts :class:`Replica` objects (call, alive, pid, stop, how it
exited). :class:`ProcessLauncher` starts the worker processes above; ``executor.backend =
"ray"`` uses :class:`~open_autoglm.executors.ray_replicas.RayLauncher`, whose replicas are Ray
actors that load and serve through the same :func:`load_replica_model` and :func:`_serve`.
"""

from __future__ import annotations

import abc
import contextlib
import functools
import logging
import os
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import IO, Any, ClassVar

import orjson

from open_autoglm.errors import (
    AutoGLMError,
    TaskFailedError,
    UnavailableError,
    ValidationError,
)
from open_autoglm.executors.replica_dispatch import DispatchPolicy
from open_autoglm.executors.sched_policy import compute_policy
from open_autoglm.futures import Promise

__all__ = [
    "REPLICA_ROLES",
    "ProcessLauncher",
    "Replica",
    "ReplicaGone",
    "ReplicaLauncher",
    "ReplicaPool",
    "load_replica_model",
    "main",
    "read_frame",
    "write_frame",
]

log = logging.getLogger(__name__)

_PREFIX = struct.Struct("<II")
# A text's share of a forward's fixed cost, in characters (which stand in for tokens here).
_TEXT_OVERHEAD = 8


def _text_cost(text: str) -> int:
    """A text's work for a replica: characters stand in for tokens (only replicas tokenise),
    plus its share of the forward's fixed cost."""
    return len(text) + _TEXT_OVERHEAD


REPLICA_ROLES = ("embedding", "text-classification")
# Environment every replica starts with: one thread in every math library, no hub access.
_REPLICA_ENV = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
}


def write_frame(stream: IO[bytes], header: Mapping[str, Any], payload: bytes = b"") -> None:
    head = orjson.dumps(header)
    stream.write(_PREFIX.pack(len(head), len(payload)) + head + payload)
    stream.flush()


def _read_exact(stream: IO[bytes], n: int) -> bytes:
    data = stream.read(n) if n else b""
    if len(data) != n:
        raise EOFError("replica pipe closed")
    return data


def read_frame(stream: IO[bytes]) -> tuple[dict[str, Any], bytes]:
    head_len, payload_len = _PREFIX.unpack(_read_exact(stream, _PREFIX.size))
    header = orjson.loads(_read_exact(stream, head_len))
    return header, _read_exact(stream, payload_len)


class _Request:
    """Texts waiting for a replica; requests with equal ``op`` and ``key`` may share a call."""

    __slots__ = ("cost", "key", "op", "promise", "texts")

    def __init__(self, op: str, texts: list[str], key: tuple[Any, ...]) -> None:
        self.op = op
        self.texts = texts
        self.key = key
        self.cost = sum(map(_text_cost, texts))
        self.promise: Promise[tuple[dict[str, Any], bytes]] = Promise()


def _split(
    reply: dict[str, Any], payload: bytes, group: list[_Request]
) -> list[tuple[dict[str, Any], bytes] | BaseException]:
    """One merged reply back into one reply per request, in order."""
    if not reply.get("ok"):
        error = _error_from(reply.get("error") or {})
        return [error] * len(group)
    if len(group) == 1:
        return [(reply, payload)]
    out: list[tuple[dict[str, Any], bytes] | BaseException] = []
    start = 0
    if group[0].op == "embed":
        _, dim = reply["shape"]
        row_bytes = dim * 4
        for request in group:
            end = start + len(request.texts)
            header = {"ok": True, "shape": [end - start, dim], "counts": reply["counts"][start:end]}
            out.append((header, payload[start * row_bytes : end * row_bytes]))
            start = end
    else:
        for request in group:
            end = start + len(request.texts)
            out.append(({"ok": True, "predictions": reply["predictions"][start:end]}, b""))
            start = end
    return out


def _split_by_length(texts: list[str], parts: int) -> list[list[int]]:
    """Indices of ``texts`` in ``parts`` runs of similar length and similar total length.

    Each replica then gets texts of one length range (little padding) and about the same
    work; characters stand in for tokens, which only the replicas count.
    """
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    costs = [_text_cost(t) for t in texts]
    return [p for p in _cut(order, costs, sum(costs) / parts, parts) if p]


def _cut(order: list[int], costs: Sequence[float], share: float, parts: int) -> list[list[int]]:
    """``order`` cut into at most ``parts`` contiguous runs of about ``share`` cost each."""
    out: list[list[int]] = [[] for _ in range(parts)]
    acc, k = 0.0, 0
    for i in order:
        cost = costs[i]
        # Next run once this item's middle would fall past the current run's share.
        if k < parts - 1 and out[k] and acc + cost / 2 > share * (k + 1):
            k += 1
        out[k].append(i)
        acc += cost
    return out


def _merge(
    op: str, parts: list[list[int]], replies: list[tuple[dict[str, Any], bytes]], n: int
) -> tuple[dict[str, Any], bytes]:
    """Per-part replies back into one reply in the original text order."""
    if op == "embed":
        import numpy as np

        dim = int(replies[0][0]["shape"][1])
        vectors = np.empty((n, dim), dtype="<f4")
        counts = [0] * n
        for idx, (header, payload) in zip(parts, replies, strict=True):
            vectors[idx] = np.frombuffer(payload, dtype="<f4").reshape(len(idx), dim)
            for j, c in zip(idx, header["counts"], strict=True):
                counts[j] = c
        return {"ok": True, "shape": [n, dim], "counts": counts}, vectors.tobytes()
    predictions: list[Any] = [None] * n
    for idx, (header, _) in zip(parts, replies, strict=True):
        for j, p in zip(idx, header["predictions"], strict=True):
            predictions[j] = p
    return {"ok": True, "predictions": predictions}, b""


def _joined(
    op: str, parts: list[list[int]], requests: list[_Request], n: int
) -> Promise[tuple[dict[str, Any], bytes]]:
    """One promise for a request that was split into ``requests`` (text indices ``parts``)."""
    joined: Promise[tuple[dict[str, Any], bytes]] = Promise()
    left = [len(requests)]
    lock = threading.Lock()

    def part_done(_: Future[Any]) -> None:
        with lock:
            left[0] -= 1
            if left[0]:
                return
        failed = next((e for r in requests if (e := r.promise.exception()) is not None), None)
        if failed is not None:
            joined.set_exception(failed)
            return
        try:
            joined.set_result(_merge(op, parts, [r.promise.result() for r in requests], n))
        except Exception as exc:  # a malformed reply must still answer the caller
            joined.set_exception(exc)

    for request in requests:
        request.promise.add_done_callback(part_done)
    return joined


def _vectors_into(out: Promise[tuple[Any, list[int]]], reply: Future[Any]) -> None:
    """An embed reply (header, payload) as (float32 rows, token counts) into ``out``."""
    import numpy as np

    exc = reply.exception()
    if exc is not None:
        out.set_exception(exc)
        return
    header, payload = reply.result()
    rows, dim = header["shape"]
    out.set_result((np.frombuffer(payload, dtype="<f4").reshape(rows, dim), list(header["counts"])))


class ReplicaGone(Exception):
    """The replica a call or a handshake went to is gone (exited, killed, its actor died)."""


class Replica(abc.ABC):
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
        ``error``). Raises ReplicaGone when it exited or did not load in time."""

    @abc.abstractmethod
    def alive(self) -> bool:
        """Whether it can take a call (cheap: the pool asks before every call)."""

    @abc.abstractmethod
    def call(self, header: Mapping[str, Any]) -> tuple[dict[str, Any], bytes]:
        """One batch in, ``(reply header, payload)`` out. Raises ReplicaGone when it died."""

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


class ReplicaLauncher(abc.ABC):
    """Starts a pool's replicas; one launcher per pool, opened and closed with it."""

    kind: ClassVar[str]  # what GET /v1/models shows as the pool's replica_kind

    @abc.abstractmethod
    def open(self) -> None:
        """Before the pool's first start (a launcher that needs a connection makes it here)."""

    @abc.abstractmethod
    def spawn(self, model: str, index: int, hello: Mapping[str, Any]) -> Replica:
        """Start replica ``index`` of ``model`` loading ``hello`` (``entry``, ``cache_dir``);
        returns at once, so that a pool's replicas load in parallel."""

    @abc.abstractmethod
    def close(self) -> None:
        """After the pool's last replica stopped; undoes :meth:`open`."""


class _ProcessReplica(Replica):
    """A worker process (``python -m open_autoglm.executors.replicas``) and its pipes."""

    def __init__(self, index: int, proc: subprocess.Popen[bytes]) -> None:
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
            raise ReplicaGone from None
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
            raise ReplicaGone from None

    def exit_status(self) -> str:
        return f"code {self.proc.poll()}"

    def begin_stop(self) -> None:
        """EOF on the replica's stdin: its loop returns and the process exits."""
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


class ProcessLauncher(ReplicaLauncher):
    """Replicas as child processes of this one, talking frames over their stdin/stdout."""

    kind = "process"

    def open(self) -> None:
        """Nothing to connect to: replicas are children of this process."""

    def spawn(self, model: str, index: int, hello: Mapping[str, Any]) -> Replica:
        env = {**os.environ, **_REPLICA_ENV}
        proc = subprocess.Popen(
            [sys.executable, "-m", "open_autoglm.executors.replicas"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        compute_policy(proc.pid)
        replica = _ProcessReplica(index, proc)
        assert proc.stdin is not None
        try:
            write_frame(proc.stdin, hello)
        except OSError:
            pass  # the handshake reports the exit
        return replica

    def close(self) -> None:
        """Nothing held beyond the replicas, which the pool has stopped."""


class ReplicaPool:
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
        launcher: ReplicaLauncher | None = None,
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
        self._pending: list[_Request] = []  # oldest first
        self._free = 0  # worker threads waiting for work
        self._all: dict[int, Replica] = {}
        self._lock = threading.Condition()
        self._closed = False
        self._restart_error: str | None = None
        self.launcher = launcher or ProcessLauncher()
        self.launcher.open()
        started: list[Replica] = []
        try:
            for i in range(replicas):  # all start before any is waited for: they load in parallel
                started.append(self._spawn(i))
            for replica in started:
                self._handshake(replica)
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
        promises = self._submit("embed", [list(texts) for texts in batches], (normalize, pooling))
        out: list[Future[tuple[Any, list[int]]]] = []
        for p in promises:
            q: Promise[tuple[Any, list[int]]] = Promise()
            p.add_done_callback(functools.partial(_vectors_into, q))
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
        (promise,) = self._submit("classify", [list(texts)], (top_k,))
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
        self, op: str, batches: list[list[str]], key: tuple[Any, ...]
    ) -> list[Promise[tuple[dict[str, Any], bytes]]]:
        """Queue one request per batch (split by length when several replicas could share it)."""
        promises: list[Promise[tuple[dict[str, Any], bytes]]] = []
        queued: list[_Request] = []
        for texts in batches:
            if self.size > 1 and len(texts) > 1:
                parts = _split_by_length(texts, self.size)
                requests = [_Request(op, [texts[i] for i in idx], key) for idx in parts]
                promises.append(_joined(op, parts, requests, len(texts)))
                queued.extend(requests)
            else:
                request = _Request(op, texts, key)
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

    def _window(self) -> list[_Request]:
        """The oldest waiting requests compatible with the oldest one, up to ``max_merge``
        texts (at least one request). Called with the lock held."""
        lead = self._pending[0]
        window: list[_Request] = []
        size = 0
        for request in self._pending:
            if request.op == lead.op and request.key == lead.key:
                if window and size + len(request.texts) > self.max_merge:
                    break
                window.append(request)
                size += len(request.texts)
        return window

    def _others_free_in(self, replica: Replica, now: float) -> list[float]:
        """Seconds until each other live replica is free (0: free now)."""
        return [
            max(0.0, r.busy_until - now) if r.busy else 0.0
            for r in self._all.values()
            if r is not replica
        ]

    def _take_share(self, replica: Replica) -> list[_Request]:
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
                mine = _cut(order, costs, share, 2)[0]
                window = [window[i] for i in sorted(mine)]
        taken = {id(r) for r in window}
        self._pending = [r for r in self._pending if id(r) not in taken]
        return window

    def _work(self, replica: Replica) -> None:
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

    def _run(self, replica: Replica, group: list[_Request], cost: float) -> Replica | None:
        """One call for ``group`` (of ``cost`` in all); returns the replica to go on with
        (None: stop)."""
        lead = group[0]
        texts = [t for r in group for t in r.texts] if len(group) > 1 else lead.texts
        extra: dict[str, Any] = (
            {"normalize": lead.key[0], "pooling": lead.key[1]}
            if lead.op == "embed"
            else {"top_k": lead.key[0]}
        )
        start = time.perf_counter()
        replies: list[tuple[dict[str, Any], bytes] | BaseException]
        dead = False
        try:
            header, payload = replica.call({"op": lead.op, "texts": texts, **extra})
            replies = _split(header, payload, group)
        except ReplicaGone:
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

    def _replace(self, dead: Replica) -> Replica | None:
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
                orphans: list[_Request] = []
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

    def _spawn(self, index: int) -> Replica:
        hello = {"entry": self.entry, "cache_dir": str(self.cache_dir)}
        return self.launcher.spawn(self.name, index, hello)

    def _handshake(self, replica: Replica) -> None:
        try:
            reply = replica.ready(self.start_timeout_s)
        except ReplicaGone:
            raise UnavailableError(
                f"model {self.name!r}: replica {replica.index} exited while loading "
                f"({replica.exit_status()}); see the server log"
            ) from None
        if not reply.get("ok"):
            replica.stop(timeout=1.0)
            raise _error_from(reply.get("error") or {})
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
    if role not in REPLICA_ROLES:
        raise ValidationError(
            f"model {entry.get('name')!r}: replicas serve only {list(REPLICA_ROLES)}"
        )
    return role


_ERRORS: dict[str, type[AutoGLMError]] = {
    "validation_error": ValidationError,
    "unavailable": UnavailableError,
}


def _error_from(error: Mapping[str, Any]) -> AutoGLMError:
    cls = _ERRORS.get(str(error.get("code")), TaskFailedError)
    return cls(str(error.get("message", "replica failed")))


# -- the replica process -----------------------------------------------------------------------


def _serve(model: Any, header: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
    op = header.get("op")
    if op == "embed":
        vectors, counts = model.embed_with_usage(
            header["texts"], normalize=header.get("normalize"), pooling=header.get("pooling")
        )
        array = vectors.numpy().astype("<f4", copy=False)
        return {"ok": True, "shape": list(array.shape), "counts": counts}, array.tobytes()
    if op == "classify":
        return {
            "ok": True,
            "predictions": model.classify(header["texts"], top_k=header["top_k"]),
        }, b""
    raise ValidationError(f"unknown replica op {op!r}")


def load_replica_model(entry: Mapping[str, Any], cache_dir: str) -> tuple[Any, dict[str, Any]]:
    """Load a replica's model with one torch thread; the model and the hello its pool reads.

    Every kind of replica loads through here, so a process and an actor serve the same model
    the same way and report the same facts (memory, pack size, Linear form) to their pool.
    """
    import torch

    torch.set_num_threads(1)
    with contextlib.suppress(RuntimeError):  # only settable before any parallel work
        torch.set_num_interop_threads(1)
    from open_autoglm.ml.text.model_loader import TextModelLoader

    model = TextModelLoader(cache_dir).load(dict(entry))
    return model, {
        "ok": True,
        "pid": os.getpid(),
        "threads": torch.get_num_threads(),
        "memory_bytes": int(getattr(model, "memory_bytes", 0)),
        "dimension": int(getattr(model, "dimension", 0) or 0),
        "pack_tokens": model.pack_tokens if getattr(model, "packed", False) else None,
        "linear": getattr(model, "linear", None),
    }


def _failure(exc: BaseException) -> dict[str, Any]:
    code = exc.code if isinstance(exc, AutoGLMError) else "internal"
    return {"ok": False, "error": {"code": code, "message": f"{exc}"}}


def main() -> None:
    """Replica process: read the entry, load the model, answer batches until stdin closes."""
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # prints from libraries go to stderr, never into the frame stream
    sys.stdout = sys.stderr
    stdin = sys.stdin.buffer
    logging.basicConfig(level=logging.WARNING)
    try:
        hello, _ = read_frame(stdin)
    except EOFError:
        return
    try:
        model, ready = load_replica_model(hello["entry"], hello["cache_dir"])
    except Exception as exc:
        write_frame(out, _failure(exc))
        return
    write_frame(out, ready)
    while True:
        try:
            header, _ = read_frame(stdin)
        except EOFError:
            return
        try:
            reply, payload = _serve(model, header)
        except Exception as exc:
            reply, payload = _failure(exc), b""
        write_frame(out, reply, payload)


if __name__ == "__main__":
    main()
