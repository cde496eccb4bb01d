"""One structured log line per request, with the task it created or read (``api.access_log``).

``GET /v1/tasks/3f2a... 200 1.4ms task=3f2a...``: the task id comes from the path, or from
the ``Location`` header a submission answers with, so a request can be followed to its task.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["RequestLogMiddleware"]

log = logging.getLogger("open_autoglm.access")

_TASK = re.compile(r"/v1/tasks/([0-9a-f]{32})")


class RequestLogMiddleware:
    """Log ``method path status ms task=<id> client=<addr>`` when each response starts."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        path: str = scope.get("path", "")

        async def logged(message: Message) -> None:
            if message["type"] == "http.response.start":
                task = _task_id(path, message.get("headers", []))
                client = scope.get("client") or ("-", 0)
                log.info(
                    "%s %s %d %.1fms task=%s client=%s",
                    scope.get("method", "-"),
                    path,
                    message["status"],
                    (time.perf_counter() - t0) * 1000,
                    task or "-",
                    client[0],
                )
            await send(message)

        await self.app(scope, receive, logged)


def _task_id(path: str, headers: Any) -> str | None:
    for name, value in headers:
        if name == b"location":
            found = _TASK.search(value.decode("latin-1"))
            if found:
                return found.group(1)
    found = _TASK.search(path)
    return found.group(1) if found else None
