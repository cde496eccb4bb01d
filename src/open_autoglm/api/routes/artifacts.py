"""Artifacts: content-addressed files in the storage hub (weights, curves, id maps).

The upload takes bytes of any type (``RAW_BODY_ROUTES``: exempt from the JSON-only rule).
Content is served as a download (``Content-Disposition: attachment``) unless it is an image
type a browser never runs, so an uploaded HTML page cannot run in the API's origin.
"""

from __future__ import annotations

import functools
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from open_autoglm.api.auth import principal_of
from open_autoglm.api.browser import content_disposition
from open_autoglm.api.deps import get_runtime
from open_autoglm.api.responses import JSONResponse
from open_autoglm.errors import ValidationError
from open_autoglm.runtime import Runtime

__all__ = ["RAW_BODY_ROUTES", "router"]

router = APIRouter(prefix="/v1/artifacts", tags=["artifacts"])
RAW_BODY_ROUTES = frozenset({("POST", "/v1/artifacts")})
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
        functools.partial(
            runtime.storage.put_artifact,
            data,
            media_type=media_type,
            name=name,
            principal=principal_of(request).owner,
        )
    )
    return JSONResponse(meta, status_code=201)


@router.get("", summary="List artifacts, newest first")
async def list_artifacts(
    request: Request, runtime: Rt, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> JSONResponse:
    only = principal_of(request).only_owner
    rows = await run_in_threadpool(
        functools.partial(runtime.storage.list_artifacts, limit, principal=only)
    )
    return JSONResponse({"artifacts": rows})


async def _meta(request: Request, runtime: Runtime, artifact_id: str) -> dict[str, Any]:
    """The artifact's record if the caller may see it (else 404, as for a missing id)."""
    only = principal_of(request).only_owner
    return await run_in_threadpool(
        functools.partial(runtime.storage.get_artifact, artifact_id, principal=only)
    )


@router.get("/{artifact_id}", summary="Artifact metadata")
async def get_artifact(artifact_id: str, request: Request, runtime: Rt) -> JSONResponse:
    return JSONResponse(await _meta(request, runtime, artifact_id))


@router.get("/{artifact_id}/content", summary="Artifact bytes")
async def get_content(artifact_id: str, request: Request, runtime: Rt) -> Response:
    meta = await _meta(request, runtime, artifact_id)
    data = await run_in_threadpool(runtime.storage.files.get, artifact_id)
    disposition = content_disposition(meta["media_type"], meta["name"])
    # X-Content-Type-Options: nosniff comes with every response (api/browser.py).
    return Response(
        data, media_type=meta["media_type"], headers={"Content-Disposition": disposition}
    )


def _media_type(header: str | None, name: str) -> str:
    """The type to store: the one sent, unless it is none or a form encoding (what curl's
    ``--data-binary`` sends by default); then guessed from the name, else octet-stream."""
    import mimetypes

    given = (header or "").split(";")[0].strip().lower()
    if given and given not in ("application/x-www-form-urlencoded", "multipart/form-data"):
        return given
    return mimetypes.guess_type(name)[0] or "application/octet-stream"
