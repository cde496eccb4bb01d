"""Browser safety: what keeps a web page from using a server it can reach.

A page in a user's browser can send requests to any server the browser reaches, a local
one included. Three things keep it from acting through ours:

- :class:`JsonOnlyMiddleware`: a body that changes state must be ``application/json``. A
  page can send ``text/plain``, form or multipart bodies (and bodies with no type) without a
  CORS preflight; ``application/json`` needs one, which the CORS policy then refuses.
- :class:`CrossOriginGuard`: a request that changes state and carries an ``Origin`` other
  than the server's own or one the CORS policy allows is refused, whatever its body.
- :class:`SecurityHeadersMiddleware`: every response says ``nosniff``, no referrer, no
  framing, and a content security policy under which nothing in it runs (the API docs page
  gets the policy it needs to work).

Artifacts are served as downloads unless they are an image type a browser never runs
(:func:`content_disposition`).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from urllib.parse import quote

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from open_autoglm.api.middleware import _reject

__all__ = [
    "API_CSP",
    "DOCS_CSP",
    "INLINE_MEDIA_TYPES",
    "CrossOriginGuard",
    "JsonOnlyMiddleware",
    "SecurityHeadersMiddleware",
    "content_disposition",
]

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

# Nothing an API response holds may run, load or be framed.
API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
# The Swagger UI and ReDoc pages load their script and style from this server (no CDN) and
# start with an inline script; they call this API (connect-src 'self') and are never framed.
DOCS_CSP = (
    "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "font-src 'self' data:; img-src 'self' data:; worker-src blob:; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)

# Image types a browser renders but never runs (SVG is an image that runs script: not here).
INLINE_MEDIA_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})


class SecurityHeadersMiddleware:
    """Add the security headers to every response (routes never set these themselves).

    Args:
        docs_paths: the API docs pages, which get :data:`DOCS_CSP` instead of
            :data:`API_CSP`.
    """

    def __init__(self, app: ASGIApp, docs_paths: Iterable[str] = ()) -> None:
        self.app = app
        common = [
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"no-referrer"),
            (b"x-frame-options", b"DENY"),
        ]
        self.api_headers = [*common, (b"content-security-policy", API_CSP.encode())]
        self.docs_headers = [*common, (b"content-security-policy", DOCS_CSP.encode())]
        self.docs_paths = frozenset(docs_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = self.docs_headers if scope["path"] in self.docs_paths else self.api_headers

        async def with_headers(msg: Message) -> None:
            if msg["type"] == "http.response.start":
                msg = {**msg, "headers": [*msg.get("headers", ()), *extra]}
            await send(msg)

        await self.app(scope, receive, with_headers)


class JsonOnlyMiddleware:
    """415 for a state-changing request whose body is not ``application/json``.

    A request without a body and without a ``Content-Type`` passes (a cancel, a delete).

    Args:
        raw_body_routes: ``(method, path)`` of the routes that take bytes of any type (the
            artifact upload).
    """

    def __init__(self, app: ASGIApp, raw_body_routes: Collection[tuple[str, str]] = ()) -> None:
        self.app = app
        self.raw = frozenset(raw_body_routes)
        # Any method on a raw route's path goes on: the router answers 405 for the wrong one.
        self.raw_paths = frozenset(path for _, path in self.raw)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in UNSAFE_METHODS:
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        root = scope.get("root_path", "")
        if root and path.startswith(root):  # mounted under a prefix: match the route's path
            path = path[len(root) :]
        if path in self.raw_paths:
            await self.app(scope, receive, send)
            return
        content_type: bytes | None = None
        has_body = False
        for name, value in scope.get("headers", ()):
            if name == b"content-type":
                content_type = value
            elif name == b"content-length":
                has_body = value.strip() not in (b"0", b"")
            elif name == b"transfer-encoding":
                has_body = True
        if content_type is None and not has_body:
            await self.app(scope, receive, send)
            return
        if content_type is not None and _is_json(content_type):
            await self.app(scope, receive, send)
            return
        shown = "none" if content_type is None else content_type.decode("latin-1")[:200]
        await _reject(
            send,
            415,
            "unsupported_media_type",
            f"unsupported content type {shown!r}: this route takes application/json",
            details=[{"loc": ["header", "content-type"], "msg": "expected application/json"}],
        )


def _is_json(content_type: bytes) -> bool:
    media = content_type.split(b";", 1)[0].strip().lower()
    return media == b"application/json"


class CrossOriginGuard:
    """403 for a state-changing request from a web page of another origin.

    Browsers send ``Origin`` on every cross-origin request that is not a plain GET; programs
    (the SDK, curl) send none. A request passes when it has no ``Origin``, when its origin
    is the server's own (same scheme, host and port as its ``Host``), or when the CORS policy
    allows it (``api.cors.allow_origins``; ``"*"`` allows every origin).
    """

    def __init__(self, app: ASGIApp, allow_origins: Iterable[str] = ()) -> None:
        self.app = app
        allowed = [o.rstrip("/").lower() for o in allow_origins]
        self.any_origin = "*" in allowed
        self.allowed = frozenset(o.encode() for o in allowed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in UNSAFE_METHODS or self.any_origin:
            await self.app(scope, receive, send)
            return
        origin = host = None
        for name, value in scope.get("headers", ()):
            if name == b"origin":
                origin = value.strip().lower()
            elif name == b"host":
                host = value.strip().lower()
        if origin is None or origin in self.allowed or _same_origin(origin, host, scope):
            await self.app(scope, receive, send)
            return
        await _reject(
            send,
            403,
            "forbidden_origin",
            f"cross-origin request from {origin.decode('latin-1')[:200]!r} refused: that "
            "origin is not in api.cors.allow_origins",
            details=[{"loc": ["header", "origin"], "msg": "origin not allowed"}],
        )


def _same_origin(origin: bytes, host: bytes | None, scope: Scope) -> bool:
    if host is None:
        return False
    scheme = str(scope.get("scheme", "http")).encode()
    default_port = b":443" if scheme == b"https" else b":80"
    if host.endswith(default_port):
        host = host[: -len(default_port)]
    if origin.endswith(default_port):
        origin = origin[: -len(default_port)]
    return bool(origin == scheme + b"://" + host)


def content_disposition(media_type: str, name: str) -> str:
    """``inline`` for the image types in :data:`INLINE_MEDIA_TYPES`, else ``attachment``,
    with the artifact's name as the file name."""
    media = media_type.split(";", 1)[0].strip().lower()
    kind = "inline" if media in INLINE_MEDIA_TYPES else "attachment"
    filename = name.rsplit("/", 1)[-1] or "artifact"
    ascii_name = "".join(c if c.isalnum() or c in "._-" else "_" for c in filename)[:200]
    return f"{kind}; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename[:200])}"
