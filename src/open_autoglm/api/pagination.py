"""Cursor pagination shared by the list routes: the cursor is the last row's ``seq``, opaque."""

from __future__ import annotations

import base64
from typing import Any

from open_autoglm import errors

__all__ = ["decode_cursor", "page"]

_MAX_SEQ = 2**63


def decode_cursor(cursor: str | None) -> int | None:
    """The ``seq`` a cursor stands for; 422 naming the query parameter if it is not ours."""
    if not cursor:
        return None
    try:
        seq = int(base64.urlsafe_b64decode(cursor.encode() + b"==").decode())
    except Exception:
        seq = -1
    if not 0 <= seq < _MAX_SEQ:  # beyond a 64-bit column: not one of ours, and no SQL can bind it
        raise errors.ValidationError(
            "invalid cursor",
            details=[{"loc": ["query", "cursor"], "msg": "not a cursor returned by this API"}],
        )
    return seq


def page(rows: list[dict[str, Any]], limit: int) -> tuple[list[dict[str, Any]], str | None]:
    """Split ``limit + 1`` fetched rows into this page and the cursor of the next (or None)."""
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    return rows, base64.urlsafe_b64encode(str(rows[-1]["seq"]).encode()).decode().rstrip("=")
