"""The FastAPI app factory."""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

from open_autoglm import __version__
from open_autoglm.api.auth import AuthMiddleware
from open_autoglm.api.browser import CrossOriginGuard, JsonOnlyMiddleware, SecurityHeadersMiddleware
from open_autoglm.api.contract import install_contract
from open_autoglm.api.docs import DOCS_PATHS, install_docs
from open_autoglm.api.errors import install_error_handlers
from open_autoglm.api.middleware import (
    BodyLimitMiddleware,
    DirectRoutes,
    Endpoint,
    RateLimitGate,
    RateLimitMiddleware,
)
from open_autoglm.api.request_log import RequestLogMiddleware
from open_autoglm.api.responses import JSONResponse
from open_autoglm.api.routes import system, tasks
from open_autoglm.api.routes.keys import key_ring
from open_autoglm.config import RateLimitSettings, Settings, load_settings
from open_autoglm.resilience.rate_limit import MemoryRateLimiter, RateLimiter, RedisRateLimiter
from open_autoglm.runtime import Runtime

__all__ = ["AREA_ROUTES", "create_app", "rate_limiter"]

# Route modules of the areas built on the core. Each exposes ``router`` and may define
# ``setup(runtime)`` to register services, admission policies or start/stop hooks.
# Routes are matched in this order, one included router after another: the OpenAI routes
# are hot, and the registry's must come first (``/v1/models/registry`` is not a model id).
AREA_ROUTES = (
    "open_autoglm.api.routes.models",
    "open_autoglm.api.routes.openai",
    "open_autoglm.api.routes.artifacts",
    "open_autoglm.api.routes.rulesets",
    "open_autoglm.api.routes.workflows",
    "open_autoglm.api.routes.keys",
)


def create_app(settings: Settings | None = None, runtime: Runtime | None = None) -> FastAPI:
    """Build the app; the runtime starts with the app's lifespan and stops with it."""
    runtime = runtime or Runtime(settings or load_settings())
    s = runtime.settings
    gate = RateLimitGate(rate_limiter(s.api.rate_limit))
    runtime.metrics.registry.register(_RateLimitCollector(gate))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime.start()
        try:
            yield
        finally:
            await gate.close()
            runtime.stop()

    app = FastAPI(
        title="Open-AutoGLM",
        version=__version__,
        default_response_class=JSONResponse,
        lifespan=lifespan,
        docs_url=None,  # served from local assets by install_docs, not from a CDN
        redoc_url=None,
    )
    app.state.runtime = runtime
    install_docs(app)
    install_error_handlers(app)
    app.include_router(tasks.router)  # first: routes are matched in order, these are hot
    direct: dict[tuple[str, str], Endpoint] = dict(tasks.DIRECT_ROUTES)
    # (method, path) of the routes that take bytes of any type; every other body is JSON.
    raw_body: set[tuple[str, str]] = set()
    for name in AREA_ROUTES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:  # a real import failure inside the module
                raise
            continue  # that area is not part of this build
        if hasattr(module, "setup"):
            module.setup(runtime)
        app.include_router(module.router)
        direct.update(getattr(module, "DIRECT_ROUTES", {}))
        raw_body.update(getattr(module, "RAW_BODY_ROUTES", ()))
    app.include_router(system.router)
    for extra in runtime.extra_routers:
        app.include_router(extra)
    # The last added runs first: security headers on every answer, CORS preflights, the
    # cross-origin guard, the API key, then the rate limit (per key), the JSON-only check,
    # the body bound, then the hottest routes without the router.
    app.add_middleware(DirectRoutes, routes=direct)
    app.add_middleware(BodyLimitMiddleware, max_bytes=s.api.max_body_bytes)
    app.add_middleware(JsonOnlyMiddleware, raw_body_routes=raw_body)
    app.add_middleware(RateLimitMiddleware, gate=gate)
    ring = key_ring(runtime)
    install_contract(app, auth_required=lambda: ring.enabled)
    app.add_middleware(AuthMiddleware, ring=ring)
    cors = s.api.cors
    app.add_middleware(CrossOriginGuard, allow_origins=cors.allow_origins)
    if cors.allow_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=cors.allow_origins,
            allow_methods=cors.allow_methods,
            allow_headers=cors.allow_headers,
            max_age=cors.max_age_s,
        )
    app.add_middleware(SecurityHeadersMiddleware, docs_paths=DOCS_PATHS)
    if s.api.access_log:  # outermost: every request is logged, refused ones too
        app.add_middleware(RequestLogMiddleware)
    return app


def rate_limiter(cfg: RateLimitSettings) -> RateLimiter | None:
    """The configured per-client limit: None (off), in memory, or shared through Redis."""
    if cfg.per_s is None:
        return None
    if cfg.redis_url:
        return RedisRateLimiter(cfg.redis_url, cfg.per_s, cfg.burst)
    return MemoryRateLimiter(cfg.per_s, cfg.burst)


class _RateLimitCollector:
    def __init__(self, gate: RateLimitGate) -> None:
        self.gate = gate

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily

        gate = self.gate
        yield CounterMetricFamily(
            "autoglm_rate_limited",
            "Requests refused by the per-client rate limit",
            value=gate.limited,
        )
        yield CounterMetricFamily(
            "autoglm_rate_limit_fallbacks",
            "Requests limited in memory because the shared (Redis) limit did not answer",
            value=getattr(gate.limiter, "fallbacks", 0),
        )

    def describe(self) -> Iterator[Any]:
        return iter(())
