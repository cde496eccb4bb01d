"""Swagger UI (``/docs``) and ReDoc (``/redoc``) served from the server itself, no CDN.

FastAPI's default pages load their scripts from a CDN, so on a host without internet access
they render blank. The assets come from the ``fastapi-offline`` package (Swagger UI bundle and
stylesheet, the ReDoc standalone script) and are served under ``/docs-assets``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

from fastapi import FastAPI
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

__all__ = ["ASSETS_PATH", "assets_dir", "hoist_defs", "install_docs"]

ASSETS_PATH: Final = "/docs-assets"


def assets_dir() -> Path:
    """The directory holding the Swagger UI and ReDoc files."""
    import fastapi_offline

    return Path(fastapi_offline.__file__).parent / "static"


# The pages themselves (their CSP lets their own inline start-up script run).
DOCS_PATHS = ("/docs", "/docs/oauth2-redirect", "/redoc")


def install_docs(app: FastAPI) -> None:
    """Add ``/docs``, ``/docs/oauth2-redirect`` and ``/redoc`` backed by local assets.

    The app must be built with ``docs_url=None, redoc_url=None``.
    """
    app.mount(ASSETS_PATH, StaticFiles(directory=assets_dir()), name="docs-assets")
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = hoist_defs(build())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    title = f"{app.title} API"
    openapi_url = app.openapi_url or "/openapi.json"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=title,
            oauth2_redirect_url="/docs/oauth2-redirect",
            swagger_js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_PATH}/favicon.png",
        )

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    async def swagger_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=openapi_url,
            title=title,
            redoc_js_url=f"{ASSETS_PATH}/redoc.standalone.js",
            redoc_favicon_url=f"{ASSETS_PATH}/favicon.png",
            with_google_fonts=False,
        )


def hoist_defs(schema: dict[str, Any]) -> dict[str, Any]:
    """Move pydantic's ``$defs`` (left inside request bodies given as raw JSON schema) into
    ``components/schemas`` and point their ``#/$defs/X`` references there.

    Inside an OpenAPI document ``#/$defs/X`` points at the document's root, where nothing is:
    ReDoc stops with "Invalid reference token: $defs" and Swagger UI shows no body example.
    """
    found: dict[str, Any] = {}

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            defs = node.pop("$defs", None)
            if isinstance(defs, dict):
                for name, sub in defs.items():
                    found.setdefault(name, walk(sub))
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                node["$ref"] = "#/components/schemas/" + ref.removeprefix("#/$defs/")
            for key, value in node.items():
                node[key] = walk(value)
        elif isinstance(node, list):
            return [walk(v) for v in node]
        return node

    walk(schema)
    if found:
        schemas = schema.setdefault("components", {}).setdefault("schemas", {})
        for name, sub in found.items():
            schemas.setdefault(name, sub)
    return schema
