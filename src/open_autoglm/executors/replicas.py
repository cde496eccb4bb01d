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
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import orjson

from open_autoglm.errors import (
    AutoGLMError,
    TaskFailedError,
    UnavailableError,
    ValidationError,
)

__all__ = ["REPLICA_ROLES", "ReplicaPool", "main", "read_frame", "write_frame"]

log = logging.getLogger(__name__)

_PREFIX = struct.Struct("<II")
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
    """One handler's call, waiting for a replica; ``key`` must match to share a call."""

    __slots__ = ("key", "op", "reply", "texts")

    def __init__(self, op: str, texts: list[str], key: tuple[Any, ...]) -> None:
        self.op = op
        self.texts = texts
        self.key = key
        self.reply: tuple[dict[str, Any], bytes] | BaseException | None = None

    def result(self) -> tuple[dict[str, Any], bytes]:
        reply = self.reply
        if isinstance(reply, BaseException):
            raise reply
        assert reply is not None
        return reply


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
    if parts <= 1:
        return [list(range(len(texts)))]
    total = sum(len(t) + 8 for t in texts)  # + a per-text share of the forward's overhead
    out: list[list[int]] = [[] for _ in range(parts)]
    acc, k = 0, 0
    for i in order:
        cost = len(texts[i]) + 8
        # Next part once this text's middle would fall past the current part's share.
        if k < parts - 1 and out[k] and acc + cost / 2 > total * (k + 1) / parts:
            k += 1
        out[k].append(i)
        acc += cost
    return [p for p in out if p]


def _merge(
    op: str, parts: list[list[int]], replies: list[tuple[dict[str, Any], bytes]], n: int
) -> tuple[dict[str, Any], bytes]:
    """Per-replica replies back into one reply in the original text order."""
    if len(parts) == 1:
        (header, payload), order = replies[0], parts[0]
        if order == sorted(order):
            return header, payload
    errors = [h for h, _ in replies if not h.get("ok")]
    if errors:
        return errors[0], b""
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


class _Replica:
    """One worker process and its pipes; used by one thread at a time."""

    def __init__(self, index: int, proc: subprocess.Popen[bytes]) -> None:
        self.index = index
        self.proc = proc
        self.info: dict[str, Any] = {}

    @property
    def pid(self) -> int:
        return self.proc.pid

    def call(self, header: Mapping[str, Any]) -> tuple[dict[str, Any], bytes]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        write_frame(self.proc.stdin, header)
        return read_frame(self.proc.stdout)

    def close_input(self) -> None:
        """EOF on the replica's stdin: its loop returns and the process exits."""
        with contextlib.suppress(OSError, ValueError):
            if self.proc.stdin is not None:
                self.proc.stdin.close()

    def stop(self, timeout: float = 5.0) -> None:
        proc = self.proc
        try:
            self.close_input()
            proc.wait(timeout)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait(timeout)
        if proc.stdout is not None:
            proc.stdout.close()


class ReplicaPool:
    """A model served by ``replicas`` worker processes (embedding or classification).

    Quacks like the in-process wrapper for the task handlers: ``role``, ``memory_bytes``,
    ``embed_with_usage`` (numpy float32 rows) and ``classify``.

    Args:
        name: the model's registry name (for errors and logs).
        entry: what TextModelLoader takes (local ``source``, ``dtype``, ``options``...).
        replicas: number of worker processes (>= 1), one torch thread each.
        cache_dir: the loader's cache directory (ONNX exports, converted models).
        start_timeout_s: how long a replica may take to import and load the model.
        max_merge: at most this many texts in one merged call.
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
        self.busy_seconds = 0.0  # summed over replicas: wall time with a batch in flight
        self.max_merge = max_merge
        self._idle: list[_Replica] = []
        self._pending: list[_Request] = []  # oldest first
        self._all: dict[int, _Replica] = {}
        self._lock = threading.Condition()
        self._closed = False
        self._restart_error: str | None = None
        started = [self._spawn(i) for i in range(replicas)]  # import and load in parallel
        try:
            for replica in started:
                self._handshake(replica)
        except BaseException:
            for replica in started:
                replica.stop(timeout=1.0)
            raise
        for replica in started:
            self._all[replica.index] = replica
            self._idle.append(replica)

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

    def embed_with_usage(
        self,
        texts: Sequence[str],
        *,
        normalize: bool | None = None,
        pooling: str | None = None,
    ) -> tuple[Any, list[int]]:
        """Vectors as a float32 numpy array (len(texts), dim) and each text's token count."""
        import numpy as np

        request = _Request("embed", list(texts), (normalize, pooling))
        header, payload = self._call(request)
        rows, dim = header["shape"]
        vectors = np.frombuffer(payload, dtype="<f4").reshape(rows, dim)
        return vectors, list(header["counts"])

    def embed(self, texts: Sequence[str], **kwargs: Any) -> Any:
        return self.embed_with_usage(texts, **kwargs)[0]

    def classify(self, texts: Sequence[str], *, top_k: int | None = 1) -> list[Any]:
        header, _ = self._call(_Request("classify", list(texts), (top_k,)))
        predictions: list[Any] = header["predictions"]
        return predictions

    # -- introspection -----------------------------------------------------------------------

    def pids(self) -> list[int]:
        with self._lock:
            return [self._all[i].pid for i in sorted(self._all)]

    def stats(self) -> dict[str, Any]:
        with self._lock:
            alive = sum(1 for r in self._all.values() if r.proc.poll() is None)
            threads = sorted({int(r.info.get("threads", 0)) for r in self._all.values()})
        return {
            "replicas": self.size,
            "alive": alive,
            "restarts": self.restarts,
            "batches": self.batches,
            "texts": self.texts,
            "busy_seconds": round(self.busy_seconds, 3),
            "threads_per_replica": threads[0] if len(threads) == 1 else threads,
        }

    def close(self) -> None:
        """Stop every replica (the model cache calls this on eviction)."""
        with self._lock:
            self._closed = True
            replicas = list(self._all.values())
            self._all.clear()
            self._idle.clear()
            self._lock.notify_all()
        for replica in replicas:  # all get EOF first, so they exit side by side
            replica.close_input()
        for replica in replicas:
            replica.stop()
        log.info("model %s: stopped %d replicas", self.name, len(replicas))

    # -- dispatch ----------------------------------------------------------------------------

    def _call(self, request: _Request) -> tuple[dict[str, Any], bytes]:
        """Run ``request`` on a free replica, merged with compatible requests waiting for one.

        The scheduler may hand over more batches than there are replicas (each handler thread
        only waits on a pipe); those wait here, and the thread that gets the next free replica
        takes every compatible waiting request with it: one bucketed call instead of several
        small ones. Followers sleep until their leader sets their result.
        """
        with self._lock:
            self._pending.append(request)
            while request.reply is None:
                if self._closed:
                    self._drop(request)
                    raise UnavailableError(f"model {self.name!r} was unloaded")
                if self._restart_error and not self._all:
                    self._drop(request)
                    raise UnavailableError(
                        f"model {self.name!r}: no replica is running ({self._restart_error})"
                    )
                if self._idle and request in self._pending:
                    group = self._take_group(request)
                    # Idle replicas share a call: one big batch must not leave them idle.
                    n = sum(len(r.texts) for r in group)
                    replicas = [self._idle.pop() for _ in range(min(len(self._idle), n))]
                    break
                self._lock.wait(0.5)
            else:
                return request.result()
        self._run(replicas, group)
        return request.result()

    def _drop(self, request: _Request) -> None:
        if request in self._pending:
            self._pending.remove(request)

    def _take_group(self, lead: _Request) -> list[_Request]:
        """``lead`` and the oldest compatible waiting requests, up to ``max_merge`` texts."""
        group, size = [lead], len(lead.texts)
        self._pending.remove(lead)
        for other in list(self._pending):
            if other.op == lead.op and other.key == lead.key:
                if size + len(other.texts) > self.max_merge:
                    break
                group.append(other)
                size += len(other.texts)
                self._pending.remove(other)
        return group

    def _run(self, replicas: list[_Replica], group: list[_Request]) -> None:
        """Send the group's texts to ``replicas`` (split by length), then answer every request."""
        lead = group[0]
        texts = [t for r in group for t in r.texts] if len(group) > 1 else lead.texts
        extra: dict[str, Any] = (
            {"normalize": lead.key[0], "pooling": lead.key[1]}
            if lead.op == "embed"
            else {"top_k": lead.key[0]}
        )
        parts = _split_by_length(texts, len(replicas))
        if len(parts) < len(replicas):
            with self._lock:
                self._idle.extend(replicas[len(parts) :])
                self._lock.notify_all()
        start = time.perf_counter()
        outcomes: list[tuple[dict[str, Any], bytes] | BaseException] = [None] * len(parts)  # type: ignore[list-item]

        def run(i: int) -> None:
            header = {"op": lead.op, "texts": [texts[j] for j in parts[i]], **extra}
            outcomes[i] = self._call_one(replicas[i], header)

        helpers = [
            threading.Thread(target=run, args=(i,), name=f"replica-call-{self.name}")
            for i in range(1, len(parts))
        ]
        for t in helpers:
            t.start()
        run(0)
        for t in helpers:
            t.join()
        busy = time.perf_counter() - start
        failures = [o for o in outcomes if isinstance(o, BaseException)]
        if failures:
            replies: list[Any] = [failures[0]] * len(group)
        else:
            merged = _merge(lead.op, parts, outcomes, len(texts))  # type: ignore[arg-type]
            replies = _split(*merged, group)
        with self._lock:
            self.batches += 1
            self.texts += len(texts)
            self.busy_seconds += busy * len(parts)
            for request, answer in zip(group, replies, strict=True):
                request.reply = answer
            self._lock.notify_all()

    def _call_one(
        self, replica: _Replica, header: dict[str, Any]
    ) -> tuple[dict[str, Any], bytes] | BaseException:
        """One replica call; a dead replica is replaced and its failure returned."""
        try:
            reply = replica.call(header)
        except (EOFError, OSError, ValueError, struct.error):
            self._replace(replica)
            return TaskFailedError(
                f"model {self.name!r}: replica {replica.index} (pid {replica.pid}) exited "
                f"(code {replica.proc.returncode}) while running this batch; it is being "
                "restarted"
            )
        except BaseException as exc:  # never leave the followers waiting
            replica.proc.kill()
            self._replace(replica)
            return exc
        with self._lock:
            self._idle.append(replica)
            self._lock.notify_all()
        return reply

    def _replace(self, dead: _Replica) -> None:
        """Reap a dead replica and start its successor in the background."""
        dead.proc.kill()
        dead.proc.wait()
        with self._lock:
            if self._all.get(dead.index) is dead:
                del self._all[dead.index]
            if self._closed:
                return
            self.restarts += 1
        log.warning(
            "model %s: replica %d (pid %d) died with code %s; restarting",
            self.name,
            dead.index,
            dead.pid,
            dead.proc.returncode,
        )
        threading.Thread(
            target=self._restart, args=(dead.index,), name=f"replica-restart-{self.name}"
        ).start()

    def _restart(self, index: int) -> None:
        try:
            replica = self._spawn(index)
            self._handshake(replica)
        except Exception as exc:
            log.exception("model %s: replica %d did not restart", self.name, index)
            with self._lock:
                self._restart_error = str(exc)
                self._lock.notify_all()
            return
        with self._lock:
            if not self._closed:
                self._all[index] = replica
                self._restart_error = None
                self._idle.append(replica)
                self._lock.notify_all()
                return
        replica.stop()

    # -- process start -----------------------------------------------------------------------

    def _spawn(self, index: int) -> _Replica:
        env = {**os.environ, **_REPLICA_ENV}
        proc = subprocess.Popen(
            [sys.executable, "-m", "open_autoglm.executors.replicas"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        replica = _Replica(index, proc)
        assert proc.stdin is not None
        try:
            write_frame(proc.stdin, {"entry": self.entry, "cache_dir": str(self.cache_dir)})
        except OSError:
            pass  # the handshake reports the exit
        return replica

    def _handshake(self, replica: _Replica) -> None:
        assert replica.proc.stdout is not None
        timer = threading.Timer(self.start_timeout_s, replica.proc.kill)
        timer.start()
        try:
            reply, _ = read_frame(replica.proc.stdout)
        except (EOFError, OSError, struct.error):
            replica.proc.kill()
            replica.proc.wait()
            raise UnavailableError(
                f"model {self.name!r}: replica {replica.index} exited while loading "
                f"(code {replica.proc.returncode}); see the server log"
            ) from None
        finally:
            timer.cancel()
        if not reply.get("ok"):
            replica.stop(timeout=1.0)
            raise _error_from(reply.get("error") or {})
        replica.info = reply
        log.info(
            "model %s: replica %d ready (pid %d, %d torch thread(s))",
            self.name,
            replica.index,
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
        import torch

        torch.set_num_threads(1)
        with contextlib.suppress(RuntimeError):  # only settable before any parallel work
            torch.set_num_interop_threads(1)
        from open_autoglm.ml.text.model_loader import TextModelLoader

        model = TextModelLoader(hello["cache_dir"]).load(hello["entry"])
        ready = {
            "ok": True,
            "pid": os.getpid(),
            "threads": torch.get_num_threads(),
            "memory_bytes": int(getattr(model, "memory_bytes", 0)),
            "dimension": int(getattr(model, "dimension", 0) or 0),
        }
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
