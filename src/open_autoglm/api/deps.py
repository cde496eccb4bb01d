"""What routes declare they need (FastAPI dependencies)."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Request

from open_autoglm.api.middleware import scope_client
from open_autoglm.errors import ValidationError
from open_autoglm.runtime import Runtime
from open_autoglm.spec.limits import check_tree

__all__ = ["client_id", "get_runtime", "json_body", "runtime_of"]


def runtime_of(request: Request) -> Runtime:
    """The app's runtime, read directly: hot routes call this instead of declaring the
    dependency, which FastAPI would resolve on every request."""
    runtime: Runtime = request.app.state.runtime
    return runtime


async def get_runtime(request: Request) -> Runtime:
    # async on purpose: FastAPI runs a plain ``def`` dependency in its thread pool, a
    # thread hop on every request that cost a sixth of the event loop's time on submit.
    return runtime_of(request)


def client_id(request: Request) -> str:
    return scope_client(request.scope)


async def json_body(request: Request) -> Any:
    """The request body decoded as JSON, with a clear 422 when it is empty or malformed."""
    raw = await request.body()
    if not raw.strip():
        raise ValidationError(
            "request body is empty", details=[{"loc": ["body"], "msg": "expected a JSON object"}]
        )
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ValidationError(
            "request body is not valid JSON",
            details=[{"loc": ["body"], "msg": f"invalid JSON: {exc}"}],
        ) from None
    check_tree(data, runtime_of(request).settings.limits)
    return data
