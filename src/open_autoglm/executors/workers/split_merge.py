"""Requests for a model-worker pool: one request split across workers by text length, and
the workers' replies merged back (or one merged call's reply split per request)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

from open_autoglm.errors import AutoGLMError, TaskFailedError, error_from_code
from open_autoglm.executors.workers.codec import Op
from open_autoglm.futures import Promise

__all__ = [
    "WorkerRequest",
    "cut",
    "error_from",
    "joined",
    "merge_replies",
    "split_by_length",
    "split_reply",
    "text_cost",
    "vectors_into",
]

# A text's share of a forward's fixed cost, in characters (which stand in for tokens here).
_TEXT_OVERHEAD = 8


def text_cost(text: str) -> int:
    """A text's work for a worker: characters stand in for tokens (only workers tokenise),
    plus its share of the forward's fixed cost."""
    return len(text) + _TEXT_OVERHEAD


class WorkerRequest:
    """Texts waiting for a worker; requests with equal ``op`` and ``key`` may share a call."""

    __slots__ = ("cost", "key", "op", "promise", "texts")

    def __init__(self, op: Op, texts: list[str], key: tuple[Any, ...]) -> None:
        self.op = op
        self.texts = texts
        self.key = key
        self.cost = sum(map(text_cost, texts))
        self.promise: Promise[tuple[dict[str, Any], bytes]] = Promise()


def error_from(error: dict[str, Any]) -> AutoGLMError:
    """The typed error a worker's ``{"code", "message"}`` stands for (TaskFailedError when the
    code names no class)."""
    message = str(error.get("message", "model worker failed"))
    code = str(error.get("code"))
    if code == AutoGLMError.code:  # an unexpected exception in the worker: the batch failed
        return TaskFailedError(message)
    return error_from_code(code, message, TaskFailedError)


def split_reply(
    reply: dict[str, Any], payload: bytes, group: list[WorkerRequest]
) -> list[tuple[dict[str, Any], bytes] | BaseException]:
    """One merged reply back into one reply per request, in order."""
    if not reply.get("ok"):
        error = error_from(reply.get("error") or {})
        return [error] * len(group)
    if len(group) == 1:
        return [(reply, payload)]
    out: list[tuple[dict[str, Any], bytes] | BaseException] = []
    start = 0
    if group[0].op is Op.EMBED:
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


def split_by_length(texts: list[str], parts: int) -> list[list[int]]:
    """Indices of ``texts`` in ``parts`` runs of similar length and similar total length.

    Each worker then gets texts of one length range (little padding) and about the same
    work; characters stand in for tokens, which only the workers count.
    """
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    costs = [text_cost(t) for t in texts]
    return [p for p in cut(order, costs, sum(costs) / parts, parts) if p]


def cut(order: list[int], costs: Sequence[float], share: float, parts: int) -> list[list[int]]:
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


def merge_replies(
    op: Op, parts: list[list[int]], replies: list[tuple[dict[str, Any], bytes]], n: int
) -> tuple[dict[str, Any], bytes]:
    """Per-part replies back into one reply in the original text order."""
    if op is Op.EMBED:
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


def joined(
    op: Op, parts: list[list[int]], requests: list[WorkerRequest], n: int
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
            joined.set_result(merge_replies(op, parts, [r.promise.result() for r in requests], n))
        except Exception as exc:  # a malformed reply must still answer the caller
            joined.set_exception(exc)

    for request in requests:
        request.promise.add_done_callback(part_done)
    return joined


def vectors_into(out: Promise[tuple[Any, list[int]]], reply: Future[Any]) -> None:
    """An embed reply (header, payload) as (float32 rows, token counts) into ``out``."""
    import numpy as np

    exc = reply.exception()
    if exc is not None:
        out.set_exception(exc)
        return
    header, payload = reply.result()
    rows, dim = header["shape"]
    out.set_result((np.frombuffer(payload, dtype="<f4").reshape(rows, dim), list(header["counts"])))
