"""Managed API keys: create (the key is shown once), list (never the key), revoke. Admin only.

``setup(runtime)`` builds the :class:`~open_autoglm.api.auth.KeyRing` the authentication
middleware checks keys with, as ``services["keys"]``; it reloads on every lease renewal.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request
from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError
from starlette.concurrency import run_in_threadpool

from open_autoglm import errors
from open_autoglm.api.auth import KeyRing, require_admin
from open_autoglm.api.deps import get_runtime, json_body
from open_autoglm.api.lifecycle import stream_slots
from open_autoglm.api.responses import JSONResponse
from open_autoglm.runtime import Runtime
from open_autoglm.spec.principal import Scope
from open_autoglm.storage.api_keys import ApiKeyRepo

__all__ = ["KeyCreate", "key_ring", "router", "setup"]

router = APIRouter(prefix="/v1/keys", tags=["keys"], dependencies=[Depends(require_admin)])
Rt = Annotated[Runtime, Depends(get_runtime)]
KeyId = Annotated[str, Path(min_length=1, max_length=32, pattern=r"^[0-9a-f]+$")]


class KeyCreate(BaseModel):
    """A new key: whose work it stands for, what it may do, and a label."""

    model_config = ConfigDict(extra="forbid")

    owner: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._@:+-]+$")
    scopes: list[Scope] = Field(default_factory=lambda: [Scope.READ, Scope.SUBMIT], min_length=1)
    name: str = Field(default="", max_length=200)


_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": KeyCreate.model_json_schema()}},
    }
}


def setup(runtime: Runtime) -> None:
    ring = KeyRing(ApiKeyRepo(runtime.storage.engine), runtime.settings.api.api_keys)
    runtime.services["keys"] = ring
    runtime.on_start.append(ring.reload)
    runtime.on_lease.append(ring.reload)


def key_ring(runtime: Runtime) -> KeyRing:
    ring = runtime.services.get("keys")
    if not isinstance(ring, KeyRing):  # the keys area is not part of this build
        ring = KeyRing(None, runtime.settings.api.api_keys)
        runtime.services["keys"] = ring
    return ring


def _repo(runtime: Runtime) -> ApiKeyRepo:
    repo = key_ring(runtime).repo
    if repo is None:
        raise errors.UnavailableError("managed API keys are not available in this build")
    return repo


@router.post("", status_code=201, openapi_extra=_BODY, summary="Create an API key (shown once)")
async def create_key(request: Request, runtime: Rt) -> JSONResponse:
    """The response's ``key`` is the only time the key is shown; the server keeps its hash."""
    raw = await json_body(request)
    try:
        body = KeyCreate.model_validate(raw)
    except PydanticValidationError as exc:
        details = [{"loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors()]
        raise errors.ValidationError("invalid API key request", details=details) from None
    record, key = await run_in_threadpool(_repo(runtime).create, body.owner, body.scopes, body.name)
    await run_in_threadpool(key_ring(runtime).reload)
    # The one response that holds a key: no cache on the way may keep it.
    return JSONResponse(
        {**record, "key": key}, status_code=201, headers={"Cache-Control": "no-store"}
    )


@router.get("", summary="List API keys (never the keys themselves)")
async def list_keys(runtime: Rt, include_revoked: bool = False) -> JSONResponse:
    keys = await run_in_threadpool(_repo(runtime).list, include_revoked=include_revoked)
    return JSONResponse({"keys": keys})


@router.post("/{key_id}/revoke", summary="Revoke an API key (refused from now on)")
async def revoke_key(key_id: KeyId, runtime: Rt, request: Request) -> JSONResponse:
    record = await run_in_threadpool(_repo(runtime).revoke, key_id)
    await run_in_threadpool(key_ring(runtime).reload)
    stream_slots(request).revoke("key:" + key_id)  # its open event streams end now
    return JSONResponse(record)
