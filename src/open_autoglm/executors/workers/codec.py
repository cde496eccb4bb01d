"""The frame codec between a model-worker pool and its workers, and the operations they know.

A frame, both directions, over a worker process's stdin/stdout (and as the reply shape of a
Ray actor): ``<u32 header length><u32 payload length><header JSON><payload bytes>``. Vectors
travel as raw little-endian float32 in the payload; nothing is pickled.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Mapping
from typing import IO, Any

import orjson

__all__ = ["FRAME_PREFIX", "WORKER_ENV", "Op", "read_frame", "write_frame"]


class Op(enum.StrEnum):
    """What a worker is asked to do with a batch of texts."""

    EMBED = "embed"
    CLASSIFY = "classify"


FRAME_PREFIX = struct.Struct("<II")

# Environment every worker starts with: one thread in every math library, no hub access.
WORKER_ENV = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
}


def write_frame(stream: IO[bytes], header: Mapping[str, Any], payload: bytes = b"") -> None:
    head = orjson.dumps(header)
    stream.write(FRAME_PREFIX.pack(len(head), len(payload)) + head + payload)
    stream.flush()


def _read_exact(stream: IO[bytes], n: int) -> bytes:
    data = stream.read(n) if n else b""
    if len(data) != n:
        raise EOFError("worker pipe closed")
    return data


def read_frame(stream: IO[bytes]) -> tuple[dict[str, Any], bytes]:
    head_len, payload_len = FRAME_PREFIX.unpack(_read_exact(stream, FRAME_PREFIX.size))
    header = orjson.loads(_read_exact(stream, head_len))
    return header, _read_exact(stream, payload_len)
