"""Killable jobs: each runs in a fresh spawned interpreter that reports over a pipe.

Messages are JSON (orjson), never pickle. The child rebuilds the task-type registry from the
same plugin settings as the server, so plugin task types run here too. ``ctx.service(name)``
in the child is a proxy: each method call travels to the parent, runs on the real service
there, and its JSON result travels back (so a training job can register its model). On cancel or
deadline the parent sends SIGTERM and, after a grace period, SIGKILL to the worker's whole
process group (:mod:`open_autoglm.executors.worker_group`).
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
import sys
import threading
from collections.abc import Callable, Mapping
from multiprocessing.connection import Connection
from typing import Any

import orjson

from open_autoglm import errors
from open_autoglm.executors import worker_group
from open_autoglm.executors.base import Job, Outcome, OutcomeStatus, ResultSink
from open_autoglm.executors.sched_policy import compute_policy

__all__ = ["ProcessJob", "cancelled_outcome", "job_payload", "relay", "run_child", "worker_died"]

log = logging.getLogger(__name__)

_GRACE_S = 2.0


class ProcessJob:
    def __init__(
        self,
        job: Job,
        sink: ResultSink,
        *,
        artifact_root: str,
        record_artifact: Callable[..., dict[str, Any]],
        env: Mapping[str, Any],
        services: Mapping[str, Any] | None = None,
    ) -> None:
        self.job = job
        self._services = services or {}
        self._sink = sink
        self._artifact_root = artifact_root
        self._record = record_artifact
        self._env = dict(env)
        self._reason = ""
        self._lock = threading.Lock()
        self._proc: Any = None

    def start(self) -> None:
        threading.Thread(
            target=self._supervise, name=f"autoglm-proc-{self.job.task_id[:8]}", daemon=True
        ).start()

    def cancel(self, reason: str) -> None:
        with self._lock:
            self._reason = reason
            proc = self._proc
        if proc is not None:
            worker_group.stop(proc, _GRACE_S)

    def _supervise(self) -> None:
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe(duplex=True)
        payload = job_payload(self.job, self._artifact_root, self._env, self._services)
        # not daemonic: a training task's ranks are its children; worker_group ends them all
        proc = ctx.Process(
            target=run_child, args=(child, orjson.dumps(payload)), kwargs={"own_process": True}
        )
        with self._lock:
            if self._reason:
                self._finish(cancelled_outcome(self._reason, []))
                return
            proc.start()
            worker_group.track(proc)
            if proc.pid is not None:
                compute_policy(proc.pid)
            self._proc = proc
        child.close()
        try:
            outcome, artifacts = relay(
                parent, self.job, self._sink, record_artifact=self._record, services=self._services
            )
        finally:
            parent.close()
            proc.join()
            worker_group.forget(proc)  # and whatever it left running
        if self._reason:
            outcome = cancelled_outcome(self._reason, artifacts)
        elif outcome is None:
            outcome = worker_died(f"worker process exited with code {proc.exitcode}", artifacts)
        self._finish(outcome)

    def _finish(self, outcome: Outcome) -> None:
        try:
            self._sink.done(self.job.task_id, outcome)
        except Exception:
            log.exception("result sink failed for task %s", self.job.task_id)


def job_payload(
    job: Job, artifact_root: str, env: Mapping[str, Any], services: Mapping[str, Any]
) -> dict[str, Any]:
    """What a worker process needs to run ``job`` (JSON: it crosses a process boundary)."""
    return {
        "task_id": job.task_id,
        "task_type": job.task_type.name,
        "model": job.model,
        "input": job.input,
        "params": job.params.model_dump(mode="json"),
        "metadata": dict(job.metadata),
        "cpu_threads": job.cpu_threads,
        "artifact_root": artifact_root,
        "env": dict(env),
        # Only plain, JSON-speaking services are proxied (not the storage hub itself).
        "services": [n for n in services if n != "storage"],
    }


def relay(
    conn: Connection,
    job: Job,
    sink: ResultSink,
    *,
    record_artifact: Callable[..., dict[str, Any]],
    services: Mapping[str, Any],
) -> tuple[Outcome | None, list[dict[str, Any]]]:
    """Serve a running child's messages until it closes ``conn``.

    Events go to ``sink``, artifacts the child wrote are recorded, service calls run here and
    their JSON answer goes back. Returns the child's outcome (None if it never sent one: it
    died or was killed) and the artifacts it recorded. Used for subprocess and Ray workers.
    """
    outcome: Outcome | None = None
    artifacts: list[dict[str, Any]] = []
    while True:
        try:
            raw = conn.recv_bytes()
        except (EOFError, OSError):
            break
        msg = orjson.loads(raw)
        kind = msg.pop("type")
        if kind == "event":
            sink.event(job.task_id, msg["kind"], msg["data"])
        elif kind == "artifact":
            meta = record_artifact(
                msg["sha256"],
                msg["size"],
                media_type=msg["media_type"],
                name=msg.get("name", ""),
                task_id=job.task_id,
            )
            artifacts.append(meta)
        elif kind == "call":
            try:
                conn.send_bytes(_call_service(services, msg))
            except OSError:
                break
        elif kind == "done":
            outcome = Outcome(
                OutcomeStatus(msg["status"]),
                msg.get("result"),
                msg.get("error"),
                bool(msg.get("retryable")),
                artifacts,
            )
    return outcome, artifacts


def _call_service(services: Mapping[str, Any], msg: dict[str, Any]) -> bytes:
    name, method = msg["service"], msg["method"]
    try:
        if method.startswith("_"):
            raise PermissionError(f"{method} is private")
        service = services[name]
        value = getattr(service, method)(*msg.get("args", []), **msg.get("kwargs", {}))
        return orjson.dumps({"ok": True, "value": value}, option=orjson.OPT_SERIALIZE_NUMPY)
    except Exception as exc:
        return orjson.dumps(
            {
                "ok": False,
                "error": f"{type(exc).__name__}: {exc}",
                "key": isinstance(exc, KeyError),
            }
        )


def cancelled_outcome(reason: str, artifacts: list[dict[str, Any]]) -> Outcome:
    """A killed worker's outcome: a timeout fails the task, anything else cancels it."""
    if reason == "timeout":
        return Outcome(
            OutcomeStatus.FAILED,
            error={"code": "timeout", "message": "task exceeded its timeout"},
            artifacts=artifacts,
        )
    return Outcome(
        OutcomeStatus.CANCELLED, error={"code": "cancelled", "message": reason}, artifacts=artifacts
    )


def worker_died(message: str, artifacts: list[dict[str, Any]]) -> Outcome:
    """A worker that ended without an outcome (killed, out of memory): retryable."""
    return Outcome(
        OutcomeStatus.FAILED,
        error={"code": "worker_died", "message": message},
        retryable=True,
        artifacts=artifacts,
    )


class _ChildContext:
    """TaskContext inside the child process; everything goes back over the pipe."""

    def __init__(self, conn: Connection, payload: dict[str, Any], params: Any) -> None:
        from open_autoglm.storage.artifacts import ArtifactFiles

        self._conn = conn
        self.task_id = payload["task_id"]
        self.task_type = payload["task_type"]
        self.model = payload["model"]
        self.input = payload["input"]
        self.params = params
        self.metadata = payload["metadata"]
        self.cpu_threads = payload["cpu_threads"]
        self._files = ArtifactFiles(payload["artifact_root"])
        self._service_names = frozenset(payload.get("services", ()))

    def _send(self, msg: dict[str, Any]) -> None:
        self._conn.send_bytes(orjson.dumps(msg, option=orjson.OPT_SERIALIZE_NUMPY))

    def progress(self, fraction: float, message: str = "", **data: Any) -> None:
        self._send(
            {
                "type": "event",
                "kind": "progress",
                "data": {
                    "fraction": max(0.0, min(1.0, float(fraction))),
                    "message": message,
                    **data,
                },
            }
        )

    def log(self, message: str, level: str = "info") -> None:
        self._send({"type": "event", "kind": "log", "data": {"level": level, "message": message}})

    def is_cancelled(self) -> bool:
        return False  # the parent terminates the process instead

    def check_cancelled(self) -> None:
        return None

    def save_artifact(self, data: bytes, *, media_type: str, name: str = "") -> dict[str, Any]:
        sha, size = self._files.put(data)
        meta = {"id": sha, "sha256": sha, "size": size, "media_type": media_type, "name": name}
        self._send({"type": "artifact", **meta})
        return meta

    def load_artifact(self, artifact_id: str) -> bytes:
        return self._files.get(artifact_id)

    def service(self, name: str) -> Any:
        if name not in self._service_names:
            raise KeyError(f"service {name!r} is not available")
        return _ServiceProxy(self, name)

    def _call(
        self, service: str, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        self._send(
            {
                "type": "call",
                "service": service,
                "method": method,
                "args": list(args),
                "kwargs": kwargs,
            }
        )
        reply = orjson.loads(self._conn.recv_bytes())
        if not reply["ok"]:
            if "code" in reply:  # the service's own error, re-raised as the same class
                raise errors.error_from_code(reply["code"], reply["error"])
            raise (KeyError if reply.get("key") else RuntimeError)(reply["error"])
        return reply["value"]


class _ServiceProxy:
    """Stands in for a parent-side service; methods are called over the pipe."""

    def __init__(self, ctx: _ChildContext, name: str) -> None:
        self._ctx = ctx
        self._name = name

    def __getattr__(self, method: str) -> Any:
        if method.startswith("_"):
            raise AttributeError(method)

        def call(*args: Any, **kwargs: Any) -> Any:
            return self._ctx._call(self._name, method, args, kwargs)

        return call


def run_child(conn: Connection, raw: bytes, *, own_process: bool = False) -> None:
    """Run the job in ``raw`` (the JSON payload) in this process, reporting over ``conn``.

    ``own_process``: this process exists for the job alone (a :class:`ProcessJob`): it leads
    the process group its children join, and the SIGTERM of a cancel or deadline raises
    :class:`SystemExit`, so the handler's ``finally`` blocks run (a training supervisor stops
    its ranks) before the worker exits.
    """
    if not own_process:
        _run_job(conn, raw)
        return
    worker_group.become_group_leader()
    signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        _run_job(conn, raw)
    except _Terminated as stop:
        # the handler's finally blocks have run; skip the interpreter's teardown, as the
        # signal's default action does (torch's can outlast the grace period)
        os._exit(int(stop.code or 1))


def _run_job(conn: Connection, raw: bytes) -> None:
    payload = orjson.loads(raw)
    for key, value in payload["env"].get("environ", {}).items():
        os.environ[key] = str(value)
    threads = max(1, int(payload["cpu_threads"]))
    # Set before anything imports torch: one torch thread per allotted CPU, never more.
    os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ["MKL_NUM_THREADS"] = str(threads)
    if "torch" in sys.modules:  # a reused worker (Ray) may have imported it already
        sys.modules["torch"].set_num_threads(threads)
    from open_autoglm.executors.outcome import run_handler
    from open_autoglm.plugins.registry import PluginRegistry

    registry = PluginRegistry.from_env(payload["env"].get("plugins", {}))
    task_type = registry.task_type(payload["task_type"])
    params = task_type.params_model.model_validate(payload["params"])
    ctx = _ChildContext(conn, payload, params)
    outcome = run_handler(task_type.handler, ctx)
    ctx._send(
        {
            "type": "done",
            "status": outcome.status.value,
            "result": outcome.result,
            "error": outcome.error,
            "retryable": outcome.retryable,
        }
    )
    conn.close()


class _Terminated(SystemExit):
    """SIGTERM in a worker: passes every ``except Exception`` on its way up (as SystemExit)."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise _Terminated(128 + signum)  # the exit code a shell reports for the signal
