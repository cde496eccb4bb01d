"""The FastAPI app factory."""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from open_autoglm import __version__
from open_autoglm.api.errors import install_error_handlers
from open_autoglm.api.middleware import ApiKeyMiddleware, BodyLimitMiddleware
from open_autoglm.api.responses import JSONResponse
from open_autoglm.api.routes import system, tasks
from open_autoglm.config import Settings, load_settings
from open_autoglm.runtime import Runtime

__all__ = ["AREA_ROUTES", "create_app"]

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
)


def create_app(settings: Settings | None = None, runtime: Runtime | None = None) -> FastAPI:
    """Build the app; the runtime starts with the app's lifespan and stops with it."""
    runtime = runtime or Runtime(settings or load_settings())
    s = runtime.settings

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime.start()
        try:
            yield
        finally:
            runtime.stop()

    app = FastAPI(
        title="Open-AutoGLM",
        version=__version__,
        default_response_class=JSONResponse,
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    install_error_handlers(app)
    app.include_router(tasks.router)  # first: routes are matched in order, these are hot
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
    app.include_router(system.router)
    for extra in runtime.extra_routers:
        app.include_router(extra)
    app.add_middleware(BodyLimitMiddleware, max_bytes=s.api.max_body_bytes)
    app.add_middleware(ApiKeyMiddleware, keys=s.api.api_keys)
    return app
