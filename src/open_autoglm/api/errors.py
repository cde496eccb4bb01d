"""One table from error class to HTTP status, and the handlers that render ``{"error": ...}``."""

from __future__ import annotations

import functools
import math
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from open_autoglm import errors
from open_autoglm.api.responses import JSONResponse

__all__ = [
    "STATUS_BY_ERROR",
    "error_response",
    "install_error_handlers",
    "platform_errors",
    "retry_after_header",
    "status_for",
    "status_for_code",
]

STATUS_BY_ERROR: dict[type[errors.AutoGLMError], int] = {
    errors.ValidationError: 422,
    errors.NotFoundError: 404,
    errors.ConflictError: 409,
    errors.AuthenticationError: 401,
    errors.PermissionDeniedError: 403,
    errors.UnsupportedMediaTypeError: 415,
    errors.PolicyBlockedError: 403,
    errors.PayloadTooLargeError: 413,
    errors.AdmissionError: 429,
    errors.RateLimitedError: 429,
    errors.UnavailableError: 503,
    errors.CircuitOpenError: 503,
    errors.TaskFailedError: 500,
    errors.TaskTimeoutError: 504,
    errors.TaskCancelledError: 409,
    errors.PluginError: 500,
    errors.StorageError: 500,
}


def _status_of(error: type[errors.AutoGLMError]) -> int:
    for cls in error.__mro__:
        if cls in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[cls]
    return 500


def status_for(exc: errors.AutoGLMError) -> int:
    return _status_of(type(exc))


def status_for_code(code: str) -> int:
    """The status of an error known only by its code (a failed task's stored error)."""
    return _status_of(errors.error_class(code, errors.TaskFailedError))


def retry_after_header(seconds: float) -> str:
    """Retry-After in whole seconds, rounded up (never 0): a client that comes back when told
    must not arrive before the token, probe or queue slot it waits for."""
    return str(max(1, math.ceil(seconds)))


def error_response(exc: errors.AutoGLMError) -> JSONResponse:
    headers: dict[str, str] = {}
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        headers["Retry-After"] = retry_after_header(retry_after)
    body: dict[str, Any] = {"error": exc.to_dict()}
    if isinstance(exc, errors.PolicyBlockedError):
        body["error"]["rule"] = exc.rule
    return JSONResponse(body, status_code=status_for(exc), headers=headers)


def platform_errors(
    endpoint: Callable[[Request], Awaitable[Response]],
) -> Callable[[Request], Awaitable[Response]]:
    """``endpoint`` answering the platform's errors itself, as the app's handlers would; for
    an endpoint called without the router (``DirectRoutes``), outside those handlers."""

    @functools.wraps(endpoint)
    async def guarded(request: Request) -> Response:
        try:
            return await endpoint(request)
        except errors.AutoGLMError as exc:
            return error_response(exc)
        except ClientDisconnect:
            return Response(status_code=499)  # gone while sending its body: nobody reads it

    return guarded


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(errors.AutoGLMError)
    async def _ours(_: Request, exc: errors.AutoGLMError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _fastapi(_: Request, exc: RequestValidationError) -> JSONResponse:
        details = [
            {"loc": [p for p in e["loc"] if p != "body"], "msg": e["msg"]} for e in exc.errors()
        ]
        return error_response(errors.ValidationError("invalid request", details=details))

    @app.exception_handler(ClientDisconnect)
    async def _gone(_: Request, exc: ClientDisconnect) -> Response:
        return Response(status_code=499)  # gone while sending its body (or cut at its deadline)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # every method of the path, not only the route tried
            from open_autoglm.api.contract import allowed_methods

            headers["Allow"] = ", ".join(allowed_methods(request.app, request.url.path))
        return JSONResponse(
            {"error": {"code": code, "message": str(exc.detail), "details": []}},
            status_code=exc.status_code,
            headers=headers,
        )
