"""Artifacts: content-addressed files in the storage hub (weights, curves, id maps)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from open_autoglm.api.deps import get_runtime
from open_autoglm.api.responses import JSONResponse
from open_autoglm.errors import ValidationError
from open_autoglm.runtime import Runtime

__all__ = ["router"]

router = APIRouter(prefix="/v1/artifacts", tags=["artifacts"])
Rt = Annotated[Runtime, Depends(get_runtime)]


@router.post("", status_code=201, summary="Upload bytes; returns the artifact (id = sha256)")
async def upload(
    request: Request, runtime: Rt, name: Annotated[str, Query(max_length=500)] = ""
) -> JSONResponse:
    data = await request.body()
    if not data:
        raise ValidationError(
            "artifact body is empty", details=[{"loc": ["body"], "msg": "no bytes"}]
        )
    media_type = _media_type(request.headers.get("content-type"), name)
    meta = await run_in_threadpool(
        runtime.storage.put_artifact, data, media_type=media_type, name=name
    )
    return JSONResponse(meta, status_code=201)


@router.get("", summary="List artifacts, newest first")
async def list_artifacts(
    runtime: Rt, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> JSONResponse:
    return JSONResponse(
        {"artifacts": await run_in_threadpool(runtime.storage.list_artifacts, limit)}
    )


@router.get("/{artifact_id}", summary="Artifact metadata")
async def get_artifact(artifact_id: str, runtime: Rt) -> JSONResponse:
    return JSONResponse(await run_in_threadpool(runtime.storage.get_artifact, artifact_id))


@router.get("/{artifact_id}/content", summary="Artifact bytes")
async def get_content(artifact_id: str, runtime: Rt) -> Response:
    meta = await run_in_threadpool(runtime.storage.get_artifact, artifact_id)
    data = await run_in_threadpool(runtime.storage.files.get, artifact_id)
    return Response(data, media_type=meta["media_type"])


def _media_type(header: str | None, name: str) -> str:
    """The type to store: the one sent, unless it is none or a form encoding (what curl's
    ``--data-binary`` sends by default); then guessed from the name, else octet-stream."""
    import mimetypes

    given = (header or "").split(";")[0].strip().lower()
    if given and given not in ("application/x-www-form-urlencoded", "multipart/form-data"):
        return given
    return mimetypes.guess_type(name)[0] or "application/octet-stream"
