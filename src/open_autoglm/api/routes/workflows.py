"""Workflow routes: submit and validate specs, read, list and cancel runs, events, callbacks."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError
from starlette.concurrency import run_in_threadpool

from open_autoglm import errors
from open_autoglm.api.auth import principal_of
from open_autoglm.api.deps import get_runtime, json_body
from open_autoglm.api.lifecycle import stream_slots
from open_autoglm.api.pagination import decode_cursor, page
from open_autoglm.api.responses import JSONResponse
from open_autoglm.runtime import Runtime
from open_autoglm.spec.workflow import bind_inputs
from open_autoglm.workflows.protocol import RunStatus
from open_autoglm.workflows.run_view import summarize_run
from open_autoglm.workflows.service import WorkflowService, bus_key

__all__ = ["WorkflowSubmission", "router", "setup"]

router = APIRouter(prefix="/v1/workflows", tags=["workflows"])

Rt = Annotated[Runtime, Depends(get_runtime)]
_TERMINAL = frozenset(s.value for s in RunStatus if s.terminal)


class WorkflowSubmission(BaseModel):
    """``spec``: the workflow as a JSON object or as YAML/JSON text; ``inputs``: run inputs."""

    model_config = ConfigDict(extra="forbid")

    spec: dict[str, Any] | str
    inputs: dict[str, Any] = Field(default_factory=dict)


_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": WorkflowSubmission.model_json_schema()}},
    }
}


def setup(runtime: Runtime) -> None:
    """Register the workflow service; it resumes unfinished runs once the scheduler is up."""
    service = WorkflowService(runtime)
    runtime.services["workflows"] = service
    runtime.on_start.append(service.start)
    runtime.on_stop.append(service.stop)
    runtime.on_lease.append(service.takeover)


def _service(runtime: Runtime) -> WorkflowService:
    service = runtime.services.get("workflows")
    if not isinstance(service, WorkflowService):
        raise errors.UnavailableError("the workflow service is not running")
    return service


async def _submission(request: Request) -> WorkflowSubmission:
    raw = await json_body(request)
    try:
        return WorkflowSubmission.model_validate(raw)
    except PydanticValidationError as exc:
        details = [{"loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors()]
        raise errors.ValidationError("invalid workflow submission", details=details) from None


@router.post("", status_code=202, openapi_extra=_BODY, summary="Start a workflow run")
async def submit_workflow(request: Request, runtime: Rt) -> JSONResponse:
    """Validate the spec and inputs (422 listing every problem, nothing stored), then start.

    The 202 is sent once the run and its first step submissions are committed.
    """
    body = await _submission(request)
    service = _service(runtime)
    owner = principal_of(request).owner
    reply = await run_in_threadpool(
        functools.partial(service.submit, body.spec, body.inputs, principal=owner)
    )
    run = await asyncio.wrap_future(reply)
    return JSONResponse(
        run, status_code=202, headers={"Location": f"/v1/workflows/runs/{run['id']}"}
    )


@router.post("/validate", openapi_extra=_BODY, summary="Check a workflow without running it")
async def validate_workflow_route(request: Request, runtime: Rt) -> JSONResponse:
    body = await _submission(request)
    spec = await run_in_threadpool(_service(runtime).validate, body.spec)
    if body.inputs:
        bind_inputs(spec, body.inputs)
    return JSONResponse(
        {
            "valid": True,
            "name": spec.name,
            "steps": [s.name for s in spec.steps],
            "inputs": {k: v.model_dump(mode="json") for k, v in spec.inputs.items()},
        }
    )


@router.get("/runs", summary="List workflow runs, newest first")
async def list_runs(
    request: Request,
    runtime: Rt,
    status: RunStatus | None = None,
    name: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: str | None = None,
) -> JSONResponse:
    rows = await run_in_threadpool(
        _service(runtime).repo.list_runs,
        status=status.value if status else None,
        name=name,
        after_seq=decode_cursor(cursor),
        limit=limit + 1,
        principal=principal_of(request).only_owner,
    )
    rows, next_cursor = page(rows, limit)
    return JSONResponse({"runs": [summarize_run(r) for r in rows], "next_cursor": next_cursor})


async def _visible_run(request: Request, service: WorkflowService, run_id: str) -> dict[str, Any]:
    """The run's row (without state) if the caller may see it; else not found, as for an id
    that does not exist."""
    row = await run_in_threadpool(service.repo.get_run, run_id, with_state=False)
    if not principal_of(request).sees(row.get("principal")):
        raise errors.NotFoundError(f"workflow run {run_id} not found")
    return row


@router.get("/runs/{run_id}", summary="A run with the state of every step")
async def get_run(run_id: str, request: Request, runtime: Rt) -> JSONResponse:
    service = _service(runtime)
    await _visible_run(request, service, run_id)
    return JSONResponse(await run_in_threadpool(service.get, run_id))


@router.post("/runs/{run_id}/cancel", summary="Cancel a run and its running step tasks")
async def cancel_run(run_id: str, request: Request, runtime: Rt) -> JSONResponse:
    service = _service(runtime)
    await _visible_run(request, service, run_id)  # 404 first
    return JSONResponse(await asyncio.wrap_future(service.cancel(run_id)))


@router.get("/runs/{run_id}/callbacks", summary="Callbacks of a run and every delivery attempt")
async def run_callbacks(run_id: str, request: Request, runtime: Rt) -> JSONResponse:
    service = _service(runtime)
    await _visible_run(request, service, run_id)
    callbacks = await run_in_threadpool(service.repo.callbacks, run_id)
    return JSONResponse({"run_id": run_id, "callbacks": callbacks})


@router.get(
    "/runs/{run_id}/events",
    summary="Step and run transitions (JSON, or SSE with Accept: text/event-stream)",
)
async def run_events(run_id: str, request: Request, runtime: Rt, after: int = 0) -> Any:
    service = _service(runtime)
    row = await _visible_run(request, service, run_id)
    if "text/event-stream" not in request.headers.get("accept", ""):
        events = await run_in_threadpool(service.repo.events, run_id, after)
        return JSONResponse({"run_id": run_id, "status": row["status"], "events": events})
    return stream_slots(request).stream(
        request,
        _sse(runtime, service, run_id, after),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _frame(kind: str, data: dict[str, Any], seq: int | None = None) -> bytes:
    head = f"id: {seq}\n" if seq is not None else ""
    return (head + f"event: {kind}\ndata: ").encode() + orjson.dumps(data) + b"\n\n"


def _ends(kind: str, data: dict[str, Any]) -> bool:
    return kind == "run" and data.get("status") in _TERMINAL


async def _sse(
    runtime: Runtime, service: WorkflowService, run_id: str, after: int
) -> AsyncIterator[bytes]:
    loop = asyncio.get_running_loop()
    live: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()

    def relay(kind: str, data: dict[str, Any]) -> None:
        loop.call_soon_threadsafe(live.put_nowait, (kind, data))

    unsubscribe = runtime.bus.subscribe(bus_key(run_id), relay)
    try:
        # Subscribed before reading history, so nothing falls in between; an event may come
        # twice (history and live), which a client tells apart by its state.
        history = await run_in_threadpool(service.repo.events, run_id, after)
        done = False
        for ev in history:
            yield _frame(ev["kind"], {**ev["data"], "ts": ev["ts"]}, ev["seq"])
            done = done or _ends(ev["kind"], ev["data"])
        while not done:
            try:
                kind, data = await asyncio.wait_for(live.get(), timeout=15)
            except TimeoutError:
                yield b": keep-alive\n\n"
                row = await run_in_threadpool(service.repo.get_run, run_id, with_state=False)
                if row["status"] in _TERMINAL:
                    yield _frame("run", {"status": row["status"], "error": row["error"]})
                    break
                continue
            yield _frame(kind, data)
            done = _ends(kind, data)
        yield _frame("end", {"run_id": run_id})
    finally:
        unsubscribe()
