"""Health, readiness, metrics, task types and plugins."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool

from open_autoglm import __version__
from open_autoglm.api.deps import get_runtime
from open_autoglm.api.responses import JSONResponse
from open_autoglm.runtime import Runtime

__all__ = ["router"]

router = APIRouter(tags=["system"])
Rt = Annotated[Runtime, Depends(get_runtime)]


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok", "version": __version__}


@router.get("/readyz")
async def readyz(runtime: Rt) -> JSONResponse:
    try:
        counts = await run_in_threadpool(runtime.storage.count_by_status)
    except Exception as exc:
        return JSONResponse({"status": "not ready", "reason": f"storage: {exc}"}, status_code=503)
    models: Any = runtime.services.get("models")
    return JSONResponse(
        {
            "status": "ready",
            "tasks": counts,
            "scheduler": runtime.scheduler.stats(),
            "executor": runtime.executor_info(),
            # What is loading now (model, seconds so far): a slow first request says why.
            "loading": models.loading_now() if models is not None else [],
        }
    )


@router.get("/metrics")
async def metrics(runtime: Rt) -> Response:
    return Response(generate_latest(runtime.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/v1/task-types")
async def task_types(runtime: Rt) -> JSONResponse:
    return JSONResponse({"task_types": [t.describe() for t in runtime.plugins.task_types()]})


@router.get("/v1/plugins")
async def plugins(runtime: Rt) -> JSONResponse:
    return JSONResponse({"plugins": [r.as_dict() for r in runtime.plugins.records()]})
