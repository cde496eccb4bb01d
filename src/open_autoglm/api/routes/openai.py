"""OpenAI-compatible routes: ``GET /v1/models``, ``POST /v1/completions``,
``POST /v1/chat/completions`` and ``POST /v1/embeddings``.

Requests for in-process (``hf``) models become online-inference tasks (``durable=False``)
through the same path as ``/v1/infer``: admission policies, priorities (a ``priority`` body
field, 0-9, is accepted as an extension), per-model dynamic batching and task logging apply.
``stream: true`` goes through the scheduler too: the task runs with ``params.stream`` and its
handler reports each decoded piece of text as a ``progress`` event, which the route relays
as SSE chunks from the runtime's event bus; it decodes in the same continuous batch as the
other requests, and a client that goes away cancels its task.

Models with backend ``openai`` are forwarded to their upstream (``executors/upstream.py``)
behind a circuit breaker: while it is open the answer is a 503 at once.

Every error is answered in OpenAI's shape ``{"error": {"message", "type", "param", "code"}}``
(the route class below catches them, the platform's own handlers stay as they are); invalid
requests are 400 as in OpenAI's API.

Every parameter of OpenAI's completions and chat completions is either served or refused with
a 400 naming it (``param``), never silently ignored: the request models below forbid unknown
fields, and a known parameter set to a value this server cannot honour (``logprobs: true``,
``n: 2``, a ``logit_bias`` ...) is refused by name. Only identifiers with no effect on the
output (``user``, ``metadata``, ``service_tier``, ...) are accepted and not used. Defaults are
the platform's one set (:data:`~open_autoglm.ml.text.sampling.DEFAULTS`): greedy, 128 tokens.
``response_format`` and ``tools`` are decoded under a grammar (GGUF models, llama.cpp).
"""

from __future__ import annotations

import asyncio
import base64
import functools
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response, StreamingResponse
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from open_autoglm import errors
from open_autoglm.api.auth import principal_of
from open_autoglm.api.deps import client_id, get_runtime, json_body, runtime_of
from open_autoglm.api.errors import retry_after_header, status_for
from open_autoglm.api.lifecycle import (
    ClientGone,
    CountedStreamingResponse,
    follow,
    stream_slots,
)
from open_autoglm.api.openai_requests import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    OpenAIRequest,
    SamplingRequest,
    parse_request,
)
from open_autoglm.api.responses import JSONResponse
from open_autoglm.api.routes.models import model_service
from open_autoglm.executors.model_service import ModelService
from open_autoglm.runtime import Runtime
from open_autoglm.scheduler.live_task import LiveTask
from open_autoglm.spec.model import ModelBackend, ModelSpec

__all__ = [
    "DIRECT_ROUTES",
    "ChatCompletionRequest",
    "CompletionRequest",
    "EmbeddingRequest",
    "openai_error",
    "router",
]

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}


def openai_error(
    message: str, status: int, *, code: str | None = None, param: str | None = None
) -> JSONResponse:
    return JSONResponse(
        {
            "error": {
                "message": message,
                "type": _ERROR_TYPES.get(status, "server_error"),
                "param": param,
                "code": code,
            }
        },
        status_code=status,
    )


def _from_platform(exc: errors.AutoGLMError) -> JSONResponse:
    status = status_for(exc)
    if isinstance(exc, errors.ValidationError):
        status = 400
    param = None
    if exc.details:
        loc = exc.details[0].get("loc") or []
        param = ".".join(str(p) for p in loc if p not in ("body", "params")) or None
    code = "model_not_found" if status == 404 and "model" in exc.message else exc.code
    message = exc.message
    if exc.details and isinstance(exc, errors.ValidationError):
        message += ": " + "; ".join(
            f"{'.'.join(map(str, d.get('loc', [])))}: {d.get('msg')}" for d in exc.details
        )
    response = openai_error(message, status, code=code, param=param)
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        response.headers["Retry-After"] = retry_after_header(retry_after)
    return response


def openai_errors(
    handler: Callable[[Request], Coroutine[Any, Any, Response]],
) -> Callable[[Request], Coroutine[Any, Any, Response]]:
    """``handler`` answering errors in OpenAI's shape instead of the platform's."""

    @functools.wraps(handler)
    async def guarded(request: Request) -> Response:
        try:
            return await handler(request)
        except errors.AutoGLMError as exc:
            return _from_platform(exc)
        except (ClientGone, ClientDisconnect):
            return Response(status_code=499)  # nobody reads it: nginx's "client closed"
        except RequestValidationError as exc:
            first = exc.errors()[0] if exc.errors() else {}
            return openai_error(str(first.get("msg", "invalid request")), 400)

    return guarded


class OpenAIRoute(APIRoute):
    """Answers errors in OpenAI's shape instead of the platform's."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        return openai_errors(super().get_route_handler())


router = APIRouter(prefix="/v1", tags=["openai"], route_class=OpenAIRoute)
Rt = Annotated[Runtime, Depends(get_runtime)]


# -- request bodies ----------------------------------------------------------------------------


async def _spec_serving(service: ModelService, name: str, task: str, request: Request) -> ModelSpec:
    try:
        # A thread hop costs more than the rest of the route; only a first use reads storage.
        spec = service.cached_spec(name)
        if spec is None:
            spec = await run_in_threadpool(service.spec, name)
        if not service.visible(name, principal_of(request).only_owner):  # another's model
            raise errors.NotFoundError(name)
    except errors.NotFoundError:
        raise errors.NotFoundError(f"The model '{name}' does not exist") from None
    if not spec.serves(task):
        raise errors.ValidationError(
            f"model {name!r} serves {spec.task_types}, not {task}",
            details=[{"loc": ["model"], "msg": f"not a {task} model"}],
        )
    return spec


_FAILURES: dict[str, type[errors.AutoGLMError]] = {
    "validation_error": errors.ValidationError,
    "not_found": errors.NotFoundError,
    "unavailable": errors.UnavailableError,
    "cancelled": errors.TaskCancelledError,
    "timeout": errors.TaskTimeoutError,
}


def _failure(final: dict[str, Any]) -> errors.AutoGLMError:
    """The platform error for a task that did not succeed (by its stored error code)."""
    err = final.get("error") or {}
    cls = _FAILURES.get(err.get("code", ""), errors.TaskFailedError)
    return cls(err.get("message", final["status"]), details=err.get("details") or [])


async def _run_task(runtime: Runtime, request: Request, raw: dict[str, Any]) -> dict[str, Any]:
    """Run an online-inference task through admission and the scheduler; its result."""
    spec = runtime.parse(raw)
    spec, events = await runtime.admit(spec, client=client_id(request))
    owner = principal_of(request).owner
    accepted = runtime.submit(spec, durable=False, events=events, principal=owner)
    task, _ = await asyncio.wrap_future(accepted)
    handle = runtime.track(task["id"])
    # a client that hangs up cancels its task, which frees its slot
    final = await follow(
        request, handle.future(), lambda: runtime.scheduler.cancel(handle.id, "client disconnected")
    )
    if final["status"] == "succeeded":
        return {"id": final["id"], **(final.get("result") or {})}
    raise _failure(final)


async def _start_stream(
    runtime: Runtime, request: Request, raw: dict[str, Any]
) -> tuple[LiveTask, Callable[[], None]]:
    """Submit a streaming generation task (``params.stream``); its live task and the
    client's stream slot (taken first: a client at its bound of streams starts nothing).

    The task goes through admission, priorities and the scheduler like any other; its handler
    reports each decoded piece of text as a ``progress`` event with a ``delta``.
    """
    release = stream_slots(request).acquire(client_id(request))
    try:
        spec = runtime.parse({**raw, "params": {**raw.get("params", {}), "stream": True}})
        spec, events = await runtime.admit(spec, client=client_id(request))
        owner = principal_of(request).owner
        task, _ = runtime.submit(spec, durable=False, events=events, principal=owner).result()
        handle = runtime.track(task["id"])
        if handle.live is None:  # gone already: it can only have failed before any work
            raise _failure(handle.result())
    except BaseException:
        release()
        raise
    return handle.live, release


def _sse(data: Any) -> bytes:
    return b"data: " + orjson.dumps(data) + b"\n\n"


_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


async def _forward(
    request: Request,
    service: ModelService,
    name: str,
    path: str,
    raw: dict[str, Any],
    stream: bool,
) -> Response:
    upstream = service.upstream(name)
    if not stream:
        status, data = await upstream.post(path, raw)
        return JSONResponse(data, status_code=status)
    release = stream_slots(request).acquire(client_id(request))
    try:
        status, chunks = await upstream.stream(path, raw)
    except BaseException:
        release()
        raise
    return CountedStreamingResponse(
        chunks,
        release=release,
        status_code=status,
        media_type="text/event-stream",
        headers=_SSE_HEADERS,
    )


# -- routes ------------------------------------------------------------------------------------


def _model_card(entry: dict[str, Any], stats: dict[str, Any]) -> dict[str, Any]:
    loaded = stats["models"].get(entry["name"], {})
    card = {
        "id": entry["name"],
        "object": "model",
        "created": int(entry.get("created_at") or 0),
        "owned_by": "open-autoglm",
        "backend": entry["backend"],
        "task_types": entry["task_types"],
        "state": entry["state"],
        "bytes": loaded.get("bytes", 0),
    }
    if "replicas" in loaded:
        card["replicas"] = loaded["replicas"]
    if entry["name"] in stats["upstreams"]:
        card["upstream"] = stats["upstreams"][entry["name"]]
    return card


@router.get("/models", summary="OpenAI: list models (with load state and cache stats)")
async def list_models(request: Request, runtime: Rt) -> JSONResponse:
    service = model_service(runtime)
    reader = principal_of(request).only_owner
    entries = await run_in_threadpool(functools.partial(service.list, reader=reader))
    stats = service.stats(reader=reader)
    cache = {k: v for k, v in stats.items() if k not in ("models", "upstreams")}
    return JSONResponse(
        {"object": "list", "data": [_model_card(e, stats) for e in entries], "cache": cache}
    )


@router.get("/models/{model_id}", summary="OpenAI: one model")
async def get_model(request: Request, model_id: str, runtime: Rt) -> JSONResponse:
    service = model_service(runtime)
    try:
        reader = principal_of(request).only_owner
        entry = await run_in_threadpool(service.get_for, model_id, reader)
    except errors.NotFoundError:
        raise errors.NotFoundError(f"The model '{model_id}' does not exist") from None
    return JSONResponse(_model_card(entry, service.stats()))


@router.post("/embeddings", summary="OpenAI: embeddings")
async def embeddings(request: Request) -> Response:
    runtime = runtime_of(request)
    raw = await json_body(request)
    body: EmbeddingRequest = parse_request(EmbeddingRequest, raw)
    service = model_service(runtime)
    spec = await _spec_serving(service, body.model, "embedding", request)
    if spec.backend is ModelBackend.OPENAI:
        return await _forward(request, service, body.model, "/embeddings", raw, False)
    texts = [body.input] if isinstance(body.input, str) else body.input
    task = {"task_type": "embedding", "model": body.model, "input": texts, **_prio(body)}
    result = await _run_task(runtime, request, task)
    data = []
    for i, vector in enumerate(result["embeddings"]):
        value: Any = vector
        if body.encoding_format == "base64":
            import numpy as np

            value = base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode()
        data.append({"object": "embedding", "index": i, "embedding": value})
    return JSONResponse(
        {"object": "list", "data": data, "model": body.model, "usage": result["usage"]}
    )


# Called without the router (api/middleware.py: DirectRoutes): the hottest route, and one that
# needs nothing FastAPI resolves.
DIRECT_ROUTES = {("POST", "/v1/embeddings"): openai_errors(embeddings)}


@router.post("/completions", summary="OpenAI: text completions (stream with stream: true)")
async def completions(request: Request) -> Response:
    runtime = runtime_of(request)
    raw = await json_body(request)
    body: CompletionRequest = parse_request(CompletionRequest, raw)
    service = model_service(runtime)
    spec = await _spec_serving(service, body.model, "text-generation", request)
    if spec.backend is ModelBackend.OPENAI:
        return await _forward(request, service, body.model, "/completions", raw, body.stream)
    params = body.params(body.max_tokens, chat=False)
    task: dict[str, Any] = {"task_type": "text-generation", "model": body.model}
    task.update(input=body.prompt, params=params, **_prio(body))
    if body.stream:
        if not isinstance(body.prompt, str):
            raise errors.ValidationError(
                "stream: true takes one prompt string",
                details=[{"loc": ["prompt"], "msg": "one prompt when streaming"}],
            )
        lt, release = await _start_stream(runtime, request, task)
        return _stream_response(runtime, lt, release, body, kind="text_completion")
    result = await _run_task(runtime, request, task)
    choices = [
        {"text": g["text"], "index": i, "logprobs": None, "finish_reason": g["finish_reason"]}
        for i, g in enumerate(result["generations"])
    ]
    return JSONResponse(
        {
            "id": f"cmpl-{result['id']}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": body.model,
            "choices": choices,
            "usage": result["usage"],
        }
    )


@router.post("/chat/completions", summary="OpenAI: chat completions (stream with stream: true)")
async def chat_completions(request: Request) -> Response:
    runtime = runtime_of(request)
    raw = await json_body(request)
    body: ChatCompletionRequest = parse_request(ChatCompletionRequest, raw)
    service = model_service(runtime)
    spec = await _spec_serving(service, body.model, "chat", request)
    if spec.backend is ModelBackend.OPENAI:
        return await _forward(request, service, body.model, "/chat/completions", raw, body.stream)
    messages = [m.for_template() for m in body.messages]
    task: dict[str, Any] = {"task_type": "text-generation", "model": body.model}
    task.update(input={"messages": messages}, params=body.task_params(), **_prio(body))
    if body.stream:
        lt, release = await _start_stream(runtime, request, task)
        return _stream_response(runtime, lt, release, body, kind="chat.completion.chunk")
    result = await _run_task(runtime, request, task)
    g = result["generations"][0]
    message: dict[str, Any] = {"role": "assistant", "content": g["text"]}
    if g.get("tool_calls"):
        message.update(content=g["text"] or None, tool_calls=g["tool_calls"])
    return JSONResponse(
        {
            "id": f"chatcmpl-{result['id']}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": g["finish_reason"],
                }
            ],
            "usage": result["usage"],
        }
    )


def _prio(body: OpenAIRequest) -> dict[str, Any]:
    return {} if body.priority is None else {"priority": body.priority}


# -- streaming ---------------------------------------------------------------------------------


def _tool_call_chunk(base: dict[str, Any], calls: list[dict[str, Any]]) -> dict[str, Any]:
    """A chunk carrying whole ``tool_calls`` as OpenAI's streamed deltas (indexed)."""
    delta = {"tool_calls": [{"index": i, **call} for i, call in enumerate(calls)]}
    return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}


def _stream_response(
    runtime: Runtime, lt: LiveTask, release: Callable[[], None], body: SamplingRequest, *, kind: str
) -> StreamingResponse:
    """SSE chunks from the task's ``progress`` events, then its result's finish and usage.

    The listener is attached right after acceptance, before the first token can be decoded
    (prefill comes first); should a delta still be missed, the final chunk carries whatever
    the result has beyond the streamed text, so the stream always adds up to the result.
    """
    include_usage = bool((body.stream_options or {}).get("include_usage"))
    chat = kind == "chat.completion.chunk"
    ident = f"{'chatcmpl' if chat else 'cmpl'}-{lt.id}"
    created = int(time.time())

    def chunk(text: str | None, finish: str | None, *, first: bool = False) -> dict[str, Any]:
        if chat:
            delta: dict[str, Any] = {}
            if first:
                delta["role"] = "assistant"
            if text is not None:
                delta["content"] = text
            choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish}
        else:
            choice = {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}
        return {
            "id": ident,
            "object": kind,
            "created": created,
            "model": body.model,
            "choices": [choice],
        }

    loop = asyncio.get_running_loop()
    deltas: asyncio.Queue[str | None] = asyncio.Queue()

    def listen(event: str, data: dict[str, Any]) -> None:
        if event == "progress" and "delta" in data:
            loop.call_soon_threadsafe(deltas.put_nowait, str(data["delta"]))

    unsubscribe = runtime.bus.subscribe(lt.id, listen)
    lt.done.add_done_callback(lambda _: loop.call_soon_threadsafe(deltas.put_nowait, None))

    # With tools, a reply is either a call (it starts with "<", the grammar lets no text do
    # that) or text: its first piece decides whether deltas stream or the call is held
    # back and sent as OpenAI tool_calls deltas once complete.
    tools = chat and isinstance(body, ChatCompletionRequest) and body.calls_tools()

    async def events() -> AsyncIterator[bytes]:
        text, sent = "", ""
        held = False
        try:
            if chat:
                yield _sse(chunk("", None, first=True))
            while (delta := await deltas.get()) is not None:
                text += delta
                if tools and not sent and not held:
                    if not text:
                        continue
                    held = text.startswith("<")
                if held:
                    continue
                yield _sse(chunk(text[len(sent) :], None))
                sent = text
            final = lt.done.result()
            if final["status"] != "succeeded":
                exc = _failure(final)
                yield _sse({"error": orjson.loads(_from_platform(exc).body)["error"]})
            else:
                g = (final.get("result") or {})["generations"][0]
                calls = g.get("tool_calls") or []
                if calls:
                    yield _sse(_tool_call_chunk(chunk(None, None), calls))
                rest = g["text"][len(sent) :] if g["text"].startswith(sent) else ""
                if rest:
                    yield _sse(chunk(rest, None))
                yield _sse(chunk(None if chat else "", g["finish_reason"]))
                if include_usage:
                    yield _sse({**chunk(None, None), "choices": [], "usage": g["usage"]})
        finally:
            unsubscribe()
            if not lt.done.done():  # the client went away: stop decoding for it
                runtime.scheduler.cancel(lt.id, "client closed the stream")
        yield b"data: [DONE]\n\n"

    return CountedStreamingResponse(
        events(), release=release, media_type="text/event-stream", headers=_SSE_HEADERS
    )
