"""The scalar metadata of a GGUF file, read from its header in pure Python.

Sizing a model before loading it (the model cache makes room first) needs a handful of
hyperparameters. Asking llama.cpp for them means importing ``llama_cpp`` and parsing the
whole vocabulary; this reads the key/value section through ``mmap``, skips the arrays
(the vocabulary, the merges) without decoding them, and remembers the answer per file
version (tens of milliseconds for a 49k vocabulary).
"""

from __future__ import annotations

import functools
import mmap
import struct
from pathlib import Path

__all__ = ["GGUFHeaderError", "gguf_metadata"]

_MAGIC = b"GGUF"
# GGUF value types: struct format of each fixed-size scalar (8 is a string, 9 an array).
_SCALARS = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
_STRING, _ARRAY = 8, 9

Scalar = int | float | bool | str


class GGUFHeaderError(ValueError):
    """The file is not a GGUF file this reader understands."""


def gguf_metadata(path: str | Path) -> dict[str, Scalar]:
    """Scalar metadata of ``path`` (arrays are left out), cached per (path, size, mtime)."""
    path = Path(path)
    st = path.stat()
    return dict(_read(str(path.resolve()), st.st_size, st.st_mtime_ns))


@functools.lru_cache(maxsize=64)
def _read(path: str, size: int, mtime_ns: int) -> tuple[tuple[str, Scalar], ...]:
    del size, mtime_ns  # part of the cache key only: a rewritten file is read again
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        return tuple(_parse(mm))


def _parse(mm: mmap.mmap) -> list[tuple[str, Scalar]]:
    if mm[:4] != _MAGIC:
        raise GGUFHeaderError("not a GGUF file (bad magic)")
    (version,) = struct.unpack_from("<I", mm, 4)
    if version < 2:
        raise GGUFHeaderError(f"GGUF version {version} is not supported (2 or later)")
    (n_kv,) = struct.unpack_from("<Q", mm, 16)
    off = 24
    out: list[tuple[str, Scalar]] = []
    try:
        for _ in range(n_kv):
            key, off = _string(mm, off)
            (vtype,) = struct.unpack_from("<I", mm, off)
            off += 4
            if vtype == _ARRAY:
                off = _skip_array(mm, off)
                continue
            value, off = _value(mm, off, vtype)
            out.append((key, value))
    except struct.error:
        raise GGUFHeaderError("truncated GGUF header") from None
    return out


def _string(mm: mmap.mmap, off: int) -> tuple[str, int]:
    (n,) = struct.unpack_from("<Q", mm, off)
    off += 8
    if off + n > len(mm):
        raise GGUFHeaderError("truncated GGUF header")
    return mm[off : off + n].decode("utf-8", errors="replace"), off + n


def _value(mm: mmap.mmap, off: int, vtype: int) -> tuple[Scalar, int]:
    if vtype == _STRING:
        return _string(mm, off)
    fmt = _SCALARS.get(vtype)
    if fmt is None:
        raise GGUFHeaderError(f"unknown GGUF value type {vtype}")
    (value,) = struct.unpack_from(fmt, mm, off)
    return value, off + struct.calcsize(fmt)


def _skip_array(mm: mmap.mmap, off: int) -> int:
    itype, count = struct.unpack_from("<IQ", mm, off)
    off += 12
    if itype == _STRING:
        unpack = struct.Struct("<Q").unpack_from
        for _ in range(count):
            off += 8 + unpack(mm, off)[0]
        return off
    if itype == _ARRAY:
        for _ in range(count):
            off = _skip_array(mm, off)
        return off
    fmt = _SCALARS.get(itype)
    if fmt is None:
        raise GGUFHeaderError(f"unknown GGUF array item type {itype}")
    return off + struct.calcsize(fmt) * int(count)
