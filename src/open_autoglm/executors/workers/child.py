"""A model worker's side: load the model, then serve calls (the child process's entry point,
``python -m open_autoglm.executors.workers.child``, and the body of a Ray actor)."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Mapping
from typing import Any

from open_autoglm.errors import AutoGLMError, ValidationError
from open_autoglm.executors.workers.codec import Op, read_frame, write_frame

__all__ = ["failure", "load_worker_model", "main", "serve"]


def serve(model: Any, header: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
    """Answer one call (``header["op"]`` on ``header["texts"]``) with ``model``."""
    try:
        op = Op(str(header.get("op")))
    except ValueError:
        raise ValidationError(f"unknown worker op {header.get('op')!r}") from None
    if op is Op.EMBED:
        vectors, counts = model.embed_with_usage(
            header["texts"], normalize=header.get("normalize"), pooling=header.get("pooling")
        )
        array = vectors.numpy().astype("<f4", copy=False)
        return {"ok": True, "shape": list(array.shape), "counts": counts}, array.tobytes()
    return {
        "ok": True,
        "predictions": model.classify(header["texts"], top_k=header["top_k"]),
    }, b""


def load_worker_model(entry: Mapping[str, Any], cache_dir: str) -> tuple[Any, dict[str, Any]]:
    """Load a worker's model with one torch thread; the model and the hello its pool reads.

    Every kind of worker loads through here, so a process and an actor serve the same model
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
        # Embedders: whether the Linear form and pack cap were measured or read from disk.
        "tuning": str(getattr(model, "tuning", "")) or None,
        "parent": os.getppid(),
    }


def failure(exc: BaseException) -> dict[str, Any]:
    """The reply that reports ``exc`` to the pool (its code names the error class)."""
    code = exc.code if isinstance(exc, AutoGLMError) else "internal"
    return {"ok": False, "error": {"code": code, "message": f"{exc}"}}


def main() -> None:
    """Worker process: read the entry, load the model, answer batches until stdin closes.

    Frames come in on fd 0 and go out on fd 1, whether this process was started as
    ``python -m`` or forked from the replica zygote (``executors/workers/zygote.py``).
    """
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # prints from libraries go to stderr, never into the frame stream
    sys.stdout = sys.stderr
    stdin = os.fdopen(0, "rb", closefd=False)
    logging.basicConfig(level=logging.WARNING)
    try:
        hello, _ = read_frame(stdin)
    except EOFError:
        return
    try:
        model, ready = load_worker_model(hello["entry"], hello["cache_dir"])
    except Exception as exc:
        write_frame(out, failure(exc))
        return
    write_frame(out, ready)
    while True:
        try:
            header, _ = read_frame(stdin)
        except EOFError:
            return
        try:
            reply, payload = serve(model, header)
        except Exception as exc:
            reply, payload = failure(exc), b""
        write_frame(out, reply, payload)


if __name__ == "__main__":
    main()
