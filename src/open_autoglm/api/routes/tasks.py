"""Task routes: submit, read, list, cancel, events (JSON or SSE), and online inference."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Query, Request
from starlette.concurrency import run_in_threadpool

from open_autoglm.api.auth import principal_of, require_admin
from open_autoglm.api.deps import client_id, get_runtime, json_body, runtime_of
from open_autoglm.api.errors import platform_errors, status_for_code
from open_autoglm.api.lifecycle import ClientGone, follow, stream_slots
from open_autoglm.api.pagination import decode_cursor, page
from open_autoglm.api.responses import JSONResponse
from open_autoglm.errors import ConflictError, NotFoundError, PolicyBlockedError, ValidationError
from open_autoglm.runtime import Runtime, public_task
from open_autoglm.spec.principal import Principal
from open_autoglm.spec.task import TERMINAL_STATUSES, TaskSpec, TaskStatus

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["tasks"])

Rt = Annotated[Runtime, Depends(get_runtime)]
_SPEC_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": TaskSpec.model_json_schema()}},
    }
}


async def _accept(
    runtime: Runtime, request: Request, *, durable: bool
) -> tuple[dict[str, Any], bool]:
    raw = await json_body(request)
    spec = runtime.parse(raw)
    spec, events = await runtime.admit(spec, client=client_id(request))
    principal = principal_of(request)
    fut = runtime.submit(
        spec,
        durable=durable,
        events=events,
        principal=principal.owner,
        artifact_reader=principal.only_owner,
    )
    return await _own_duplicate(runtime, principal, *await asyncio.wrap_future(fut))


async def _own_duplicate(
    runtime: Runtime, principal: Principal, task: dict[str, Any], created: bool
) -> tuple[dict[str, Any], bool]:
    """An idempotency key names one owner's task: another owner's reuse of it is a 409 (never
    that task)."""
    if created:
        return task, created
    task = await run_in_threadpool(runtime.get_task, task["id"], with_result=False)
    if not principal.sees(task.get("owner")):
        raise ConflictError(
            f"idempotency key {task['idempotency_key']!r} is already used by another owner",
            details=[{"loc": ["idempotency_key"], "msg": "already used"}],
        )
    return task, created


def _visible(principal: Principal, task: dict[str, Any]) -> dict[str, Any]:
    """The task if the caller may see it; else not found, as for an id that does not exist
    (so ids cannot be probed)."""
    if not principal.sees(task.get("owner")):
        raise NotFoundError(f"task {task['id']} not found")
    return task


# The two submit routes read the runtime from app state instead of ``Depends``: dependency
# resolution was an eighth of the event loop's time per request on this hot path.


@router.post("/tasks", status_code=202, openapi_extra=_SPEC_BODY, summary="Submit a task")
async def submit_task(request: Request) -> JSONResponse:
    """Accept a task; the 202 is sent only after the task is committed to storage."""
    task, created = await _accept(runtime_of(request), request, durable=True)
    return JSONResponse(
        {**task, "created": created},
        status_code=202 if created else 200,
        headers={"Location": f"/v1/tasks/{task['id']}"},
    )


_BATCH_LIMIT = 1000
_BATCH_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["tasks"],
                    "properties": {
                        "tasks": {
                            "type": "array",
                            "items": TaskSpec.model_json_schema(),
                            "maxItems": _BATCH_LIMIT,
                        }
                    },
                }
            }
        },
    }
}


@router.post(
    "/tasks/batch", status_code=202, openapi_extra=_BATCH_BODY, summary="Submit many tasks"
)
async def submit_batch(request: Request) -> JSONResponse:
    """Accept up to 1,000 tasks in one request, all or none.

    Every spec is validated and passed through the admission policies first; one invalid or
    blocked spec rejects the request (422 naming every problem by index, or 403) and nothing
    is stored. The 202 is sent once every task is committed; tasks keep their order.
    """
    runtime = runtime_of(request)
    body = await json_body(request)
    if not isinstance(body, dict) or set(body) != {"tasks"}:
        raise ValidationError(
            "expected an object with one field, tasks",
            details=[{"loc": ["body"], "msg": 'expected {"tasks": [spec, ...]}'}],
        )
    specs = runtime.parse_many(body["tasks"], limit=_BATCH_LIMIT)
    client = client_id(request)
    principal = principal_of(request)
    admitted = []
    for i, spec in enumerate(specs):
        try:
            admitted.append(await runtime.admit(spec, client=client))
        except PolicyBlockedError as exc:
            raise PolicyBlockedError(
                f"tasks[{i}]: {exc.message}; nothing was submitted",
                rule=exc.rule,
                details=[{"loc": ["tasks", i], "msg": exc.message}],
            ) from None
    runtime.scheduler.check_room(len(admitted))
    futures = [
        runtime.submit(
            spec,
            durable=True,
            events=events,
            principal=principal.owner,
            artifact_reader=principal.only_owner,
        )
        for spec, events in admitted
    ]
    accepted = [
        await _own_duplicate(runtime, principal, *task)
        for task in await asyncio.gather(*(asyncio.wrap_future(f) for f in futures))
    ]
    return JSONResponse(
        {"tasks": [{**task, "created": created} for task, created in accepted]}, status_code=202
    )


@router.post("/infer", openapi_extra=_SPEC_BODY, summary="Run a task and wait for its result")
async def infer(request: Request) -> JSONResponse:
    """Online inference: the result comes back in the response (not replayed after a crash)."""
    runtime = runtime_of(request)
    task, _ = await _accept(runtime, request, durable=False)
    handle = runtime.track(task["id"])
    if handle.live is None:
        final = await run_in_threadpool(handle.result)
    else:
        try:  # a client that hangs up cancels its task (and frees its slot)
            final = await follow(
                request,
                handle.future(),
                lambda: runtime.scheduler.cancel(handle.id, "client disconnected"),
            )
        except ClientGone:
            return JSONResponse({}, status_code=499)  # nginx's "client closed request"
    if final["status"] == TaskStatus.SUCCEEDED:
        return JSONResponse(
            {"id": final["id"], "status": final["status"], "result": final.get("result")}
        )
    err = final.get("error") or {}
    status = status_for_code(err.get("code", ""))
    # Worth another try soon; the stored error does not keep the exact wait.
    retry = {"Retry-After": "1"} if status in (429, 503) else None
    return JSONResponse(
        {
            "error": {
                "code": err.get("code", "task_failed"),
                "message": err.get("message", final["status"]),
                "details": err.get("details", []),
                "task_id": final["id"],
            }
        },
        status_code=status,
        headers=retry,
    )


# Called without the router (api/middleware.py: DirectRoutes), with the platform's error
# answers: online inference is the hot path and needs nothing FastAPI resolves.
DIRECT_ROUTES = {("POST", "/v1/infer"): platform_errors(infer)}


@router.get("/tasks/{task_id}", summary="Get a task (with its result once finished)")
async def get_task(task_id: str, request: Request, runtime: Rt) -> JSONResponse:
    task = await run_in_threadpool(runtime.get_task, task_id)
    return JSONResponse(_visible(principal_of(request), task))


@router.get("/tasks", summary="List tasks, newest first")
async def list_tasks(
    request: Request,
    runtime: Rt,
    status: TaskStatus | None = None,
    task_type: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: str | None = None,
) -> JSONResponse:
    after = decode_cursor(cursor)
    rows = await run_in_threadpool(
        runtime.storage.list_tasks,
        status=status.value if status else None,
        task_type=task_type,
        after_seq=after,
        limit=limit + 1,
        principal=principal_of(request).only_owner,
    )
    rows, next_cursor = page(rows, limit)
    tasks = [public_task(r) for r in rows]
    return JSONResponse({"tasks": tasks, "next_cursor": next_cursor})


@router.post(
    "/tasks/prune-online",
    summary="Delete online inference records now",
    dependencies=[Depends(require_admin)],
)
async def prune_online(
    runtime: Rt,
    older_than_s: Annotated[
        float, Query(ge=0, description="delete those that ended more than this many s ago")
    ],
) -> JSONResponse:
    """Online inference records (``/v1/infer``, OpenAI routes) that ended more than
    ``older_than_s`` ago go, with their events and results, as
    ``storage.online_retention_s`` does on its own schedule; durable tasks stay."""
    pruned = await run_in_threadpool(runtime.prune_online, older_than_s)
    return JSONResponse({"pruned": pruned, "older_than_s": older_than_s})


@router.post("/tasks/{task_id}/cancel", summary="Cancel a queued or running task")
async def cancel_task(task_id: str, request: Request, runtime: Rt) -> JSONResponse:
    task = await run_in_threadpool(runtime.get_task, task_id, with_result=False)
    _visible(principal_of(request), task)
    return JSONResponse(await run_in_threadpool(runtime.scheduler.cancel, task_id))


@router.get(
    "/tasks/{task_id}/events", summary="Task events (JSON, or SSE with Accept: text/event-stream)"
)
async def task_events(task_id: str, request: Request, runtime: Rt, after: int = 0) -> Any:
    task = await run_in_threadpool(runtime.get_task, task_id, with_result=False)
    _visible(principal_of(request), task)
    logged = runtime.pending_log(task_id)  # an answered online task: its record is landing
    if logged is not None:
        with contextlib.suppress(Exception):
            await asyncio.wrap_future(logged)
    if "text/event-stream" not in request.headers.get("accept", ""):
        events = await run_in_threadpool(runtime.storage.events, task_id, after)
        return JSONResponse({"task_id": task_id, "status": task["status"], "events": events})
    return stream_slots(request).stream(
        request,
        _sse(runtime, task_id, after),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _sse_frame(kind: str, data: dict[str, Any], seq: int | None = None) -> bytes:
    head = f"id: {seq}\n" if seq is not None else ""
    return (head + f"event: {kind}\ndata: ").encode() + orjson.dumps(data) + b"\n\n"


async def _sse(runtime: Runtime, task_id: str, after: int) -> AsyncIterator[bytes]:
    loop = asyncio.get_running_loop()
    live: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()

    def forward(kind: str, data: dict[str, Any]) -> None:
        loop.call_soon_threadsafe(live.put_nowait, (kind, data))

    unsubscribe = runtime.bus.subscribe(task_id, forward)
    try:
        history = await run_in_threadpool(runtime.storage.events, task_id, after)
        terminal = False
        for ev in history:
            yield _sse_frame(ev["kind"], {**ev["data"], "ts": ev["ts"]}, ev["seq"])
            if ev["kind"] == "status" and ev["data"].get("status") in _TERMINAL:
                terminal = True
        if not terminal:
            task = await run_in_threadpool(runtime.get_task, task_id, with_result=False)
            terminal = task["status"] in _TERMINAL
        while not terminal:
            try:
                kind, data = await asyncio.wait_for(live.get(), timeout=15)
            except TimeoutError:
                yield b": keep-alive\n\n"
                task = await run_in_threadpool(runtime.get_task, task_id, with_result=False)
                if task["status"] in _TERMINAL:
                    yield _sse_frame("status", {"status": task["status"], "error": task["error"]})
                    break
                continue
            yield _sse_frame(kind, data)
            terminal = kind == "status" and data.get("status") in _TERMINAL
        yield _sse_frame("end", {"task_id": task_id})
    finally:
        unsubscribe()


_TERMINAL = TERMINAL_STATUSES
