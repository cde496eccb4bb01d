"""The ``ray`` executor: process-mode tasks (training, other killable work) run as Ray tasks.

What runs where:

- A process-mode task becomes one Ray task whose request is the task's own: ``num_cpus`` =
  its cpu, ``memory`` = its memory_mb, ``num_gpus`` = its gpu, so Ray places it on a node that
  has them. ``max_calls=1`` gives every task a fresh worker process, as the local executor's
  spawned interpreter does: nothing leaks from one training run into the next, and killing it
  kills only it. Ray does not retry it (``max_retries=0``): retries are the scheduler's, with
  its backoff and attempt count.
- Thread-mode tasks (inference, rules, anything short or batched) stay in this process's
  worker threads, as with the local executor: they are answered from models already loaded
  here, and a Ray round trip would cost more than most of them take. Embedding and
  classification replicas become Ray actors through the model service, not through here.

The worker speaks the same JSON protocol as a local subprocess (``subprocess_runner``):
progress and log events, artifacts, service calls (a training run registers its model), and
the outcome. It connects back to this server over TCP: a listener on
``executor.ray_callback_host``, authenticated with multiprocessing's HMAC challenge on a
random key, after which the worker names its job by a random per-job token. Nothing travels
as pickle on that connection. Artifacts are written by the worker into the artifact directory,
so on a multi-node cluster every node must mount it.

Cancellation and deadlines use ``ray.cancel(force=True)``, which kills the worker; a queued
Ray task is removed before it starts. A worker that dies fails its task retryably
(``worker_died``). Shutting the server down kills the tasks it started without reporting
them: like a crash, they are re-queued when a replica takes them over.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import queue
import secrets
import socket
import threading
import time
from collections.abc import Callable
from multiprocessing import AuthenticationError
from multiprocessing.connection import (
    Client,
    Connection,
    Listener,
    answer_challenge,
    deliver_challenge,
)
from typing import Any

import orjson

from open_autoglm.config import ExecutorSettings
from open_autoglm.executors import ray_cluster
from open_autoglm.executors.base import Job, Outcome, ResultSink
from open_autoglm.executors.local import LocalExecutor
from open_autoglm.executors.subprocess_runner import (
    cancelled_outcome,
    job_payload,
    relay,
    run_child,
    worker_died,
)
from open_autoglm.scheduler.resources import Capacity

__all__ = ["RayExecutor"]

log = logging.getLogger(__name__)

_POLL_S = 0.2  # how often a supervisor checks on a Ray task that has not connected yet
_HELLO_TIMEOUT_S = 10.0
_PENDING_NOTE_S = 2.0  # a task Ray has not started after this long gets a note in its events


def _run_on_ray(address: tuple[str, int], key: bytes, token: str, raw: bytes) -> None:
    """The Ray task's body: connect back, name the job, run it like a local subprocess."""
    conn = Client((str(address[0]), int(address[1])), authkey=key)
    try:
        conn.send_bytes(token.encode())
        run_child(conn, raw)
    finally:
        conn.close()


class _CallbackServer:
    """The listener Ray workers connect back to; hands each connection to its job."""

    def __init__(self, host: str) -> None:
        self.key = secrets.token_bytes(32)
        # Authentication happens per connection in its own thread (below), so a client that
        # connects and stays silent cannot hold up the accept loop.
        self._listener = Listener((host, 0), family="AF_INET")
        self.address: tuple[str, int] = self._listener.address
        self._waiting: dict[str, queue.SimpleQueue[Connection]] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._accept, name="autoglm-ray-cb", daemon=True)
        self._thread.start()

    def expect(self, token: str) -> queue.SimpleQueue[Connection]:
        inbox: queue.SimpleQueue[Connection] = queue.SimpleQueue()
        with self._lock:
            self._waiting[token] = inbox
        return inbox

    def forget(self, token: str) -> None:
        with self._lock:
            self._waiting.pop(token, None)

    def close(self) -> None:
        self._closed = True
        self._listener.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn = self._listener.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._admit, args=(conn,), daemon=True).start()

    def _admit(self, conn: Connection) -> None:
        """Authenticate, read the job token, hand over; a peer that does not finish within
        ``_HELLO_TIMEOUT_S`` is hung up on (the handshake itself has no timeout)."""
        state = {"done": False}
        lock = threading.Lock()

        def hang_up() -> None:
            with lock:
                if state["done"]:
                    return
            with contextlib.suppress(OSError):  # wakes the read blocked in the handshake
                peer = socket.socket(fileno=os.dup(conn.fileno()))
                try:
                    peer.shutdown(socket.SHUT_RDWR)
                finally:
                    peer.close()

        timer = threading.Timer(_HELLO_TIMEOUT_S, hang_up)
        timer.start()
        try:
            deliver_challenge(conn, self.key)
            answer_challenge(conn, self.key)
            token = conn.recv_bytes(64).decode()
            with lock:
                state["done"] = True
        except (OSError, EOFError, AuthenticationError, UnicodeDecodeError) as exc:
            log.warning("ray callback: refused a connection (%s)", type(exc).__name__)
            conn.close()
            return
        finally:
            timer.cancel()
        with self._lock:
            inbox = self._waiting.get(token)
        if inbox is None:
            log.warning("ray callback: a worker named an unknown job")
            conn.close()
            return
        inbox.put(conn)


class _RayJob:
    """One process-mode task on Ray, supervised from a thread of this process."""

    def __init__(
        self,
        job: Job,
        sink: ResultSink,
        executor: RayExecutor,
        payload: bytes,
        serve: Callable[[Connection], tuple[Outcome | None, list[dict[str, Any]]]],
    ) -> None:
        self.job = job
        self._sink = sink
        self._ex = executor
        self._payload = payload  # the job as the worker reads it (JSON)
        self._serve = serve  # relay() bound to this job: answers the worker until it hangs up
        self._lock = threading.Lock()
        self._reason = ""
        self._ref: Any = None
        self._abandoned = False  # the server is shutting down: kill, do not report

    def start(self) -> None:
        threading.Thread(
            target=self._supervise, name=f"autoglm-ray-{self.job.task_id[:8]}", daemon=True
        ).start()

    def cancel(self, reason: str) -> None:
        with self._lock:
            self._reason = self._reason or reason
            ref = self._ref
        if ref is not None:
            self._ex.ray.cancel(ref, force=True)

    def abandon(self) -> None:
        with self._lock:
            self._abandoned = True
        self.cancel("shutdown")

    def _options(self) -> dict[str, Any]:
        job = self.job
        from open_autoglm.ml.training.spec import ranks_reserve_their_own

        opts: dict[str, Any] = {
            # a distributed training job's ranks are Ray actors reserving their own CPUs;
            # its supervisor only relays their messages
            "num_cpus": 0 if ranks_reserve_their_own(job.params) else job.cpu,
            "name": f"autoglm:{job.task_type.name}:{job.task_id}",
        }
        if job.memory_mb:
            opts["memory"] = job.memory_mb * 2**20
        if job.gpu:
            opts["num_gpus"] = job.gpu
        return opts

    def _supervise(self) -> None:
        ex = self._ex
        ray = ex.ray
        token = secrets.token_hex(16)
        inbox = ex.callbacks.expect(token)
        outcome: Outcome | None = None
        artifacts: list[dict[str, Any]] = []
        try:
            early: Outcome | None = None  # finished outside the lock: _finish takes it
            with self._lock:
                if self._reason:
                    early = cancelled_outcome(self._reason, [])
                else:
                    try:
                        self._ref = ex.remote.options(**self._options()).remote(
                            ex.callbacks.address, ex.callbacks.key, token, self._payload
                        )
                    except Exception as exc:  # Ray refused it (disconnected, bad options)
                        early = worker_died(f"Ray did not take the task: {exc}", [])
                ref = self._ref
            if early is not None:
                self._finish(early)
                return
            conn: Connection | None = None
            note_at: float | None = time.monotonic() + _PENDING_NOTE_S
            while conn is None:
                try:
                    conn = inbox.get(timeout=_POLL_S)
                except queue.Empty:
                    finished, _ = ray.wait([ref], timeout=0)
                    if finished:  # removed while queued, or died before it connected
                        break
                    if note_at is not None and time.monotonic() >= note_at:
                        self._note_pending(ray)
                        note_at = None
            if conn is not None:
                try:
                    outcome, artifacts = self._serve(conn)
                finally:
                    conn.close()
        finally:
            ex.callbacks.forget(token)
        error = _ray_error(ray, ref)
        if self._reason:
            outcome = cancelled_outcome(self._reason, artifacts)
        elif outcome is None:
            outcome = worker_died(
                f"the Ray worker running this task ended without a result ({error or 'no error'})",
                artifacts,
            )
        self._finish(outcome)

    def _note_pending(self, ray: Any) -> None:
        """Say so in the task's events when Ray has not started it yet: the cluster's CPUs
        may be held by other work (model replicas are actors holding one CPU each)."""
        try:
            free = ray.available_resources()
        except Exception:  # only a note: never fail the task over it
            free = {}
        asks = {k: v for k, v in self._options().items() if k != "name"}
        have = {k: free.get(k, 0.0) for k in ("CPU", "memory", "GPU") if k in free or k == "CPU"}
        self._sink.event(
            self.job.task_id,
            "log",
            {
                "level": "warning",
                "message": f"waiting for Ray to place this task: it asks {asks}, the cluster "
                f"has {have} free (model replicas on Ray hold one CPU each)",
                "ray_pending": True,
            },
        )

    def _finish(self, outcome: Outcome) -> None:
        self._ex.forget(self)
        with self._lock:
            if self._abandoned:
                return
        try:
            self._sink.done(self.job.task_id, outcome)
        except Exception:
            log.exception("result sink failed for task %s", self.job.task_id)


def _ray_error(ray: Any, ref: Any) -> str:
    """The first line of the Ray task's error, '' if it ended cleanly."""
    try:
        ray.get(ref, timeout=30)
    except Exception as exc:
        first = str(exc).strip().splitlines()
        return f"{type(exc).__name__}: {first[0] if first else ''}"
    return ""


class RayExecutor(LocalExecutor):
    """The local executor, with process-mode tasks sent to Ray instead of subprocesses.

    Its capacity is what the Ray cluster offers (the settings' cpu/memory_mb/gpu for a local
    instance), so the scheduler places against the cluster and Ray places on its nodes.
    """

    def __init__(self, *, settings: ExecutorSettings, **kwargs: Any) -> None:
        kwargs.setdefault("name", "ray")
        super().__init__(**kwargs)
        self._settings = settings
        self._live: set[_RayJob] = set()
        self._live_lock = threading.Lock()
        self.cluster: ray_cluster.ClusterInfo | None = None
        self.ray: Any = None
        self.remote: Any = None
        self.callbacks: _CallbackServer

    def start(self) -> None:
        self.cluster = ray_cluster.acquire(self._settings)
        try:
            self.ray = ray_cluster.ray_module()
            self.capacity = Capacity(
                cpu=self.cluster.cpu, memory_mb=self.cluster.memory_mb, gpu=self.cluster.gpu
            )
            self.remote = self.ray.remote(max_calls=1, max_retries=0)(_run_on_ray)
            self.callbacks = _CallbackServer(self._settings.ray_callback_host)
        except BaseException:
            ray_cluster.release()
            raise
        log.info(
            "ray executor: %s, %.1f CPU, %d MB, %d GPU; workers call back on %s:%d",
            self.cluster.address,
            self.cluster.cpu,
            self.cluster.memory_mb,
            self.cluster.gpu,
            *self.callbacks.address,
        )
        super().start()

    def _start_process(self, job: Job, sink: ResultSink) -> Any:
        payload = job_payload(job, self._artifact_root, self._process_env, self._services)
        rj = _RayJob(
            job,
            sink,
            self,
            orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY),
            functools.partial(
                relay, job=job, sink=sink, record_artifact=self._record, services=self._services
            ),
        )
        with self._live_lock:
            self._live.add(rj)
        rj.start()
        return rj

    def forget(self, rj: _RayJob) -> None:
        with self._live_lock:
            self._live.discard(rj)

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        cluster = self.cluster
        info["ray"] = {
            "address": cluster.address if cluster else None,
            "started_here": cluster.local if cluster else None,
            "callback": "{}:{}".format(*self.callbacks.address) if cluster else None,
            "tasks": len(self.live_tasks()),
        }
        return info

    def live_tasks(self) -> list[str]:
        """Ids of the tasks running (or queued) on Ray now."""
        with self._live_lock:
            return [rj.job.task_id for rj in self._live]

    def shutdown(self, wait: bool = True) -> None:
        super().shutdown(wait)
        with self._live_lock:
            live = list(self._live)
        for rj in live:  # like a crash: they are re-queued when a replica takes them over
            rj.abandon()
        if self.cluster is not None:
            self.callbacks.close()
            ray_cluster.release()
            self.cluster = None
