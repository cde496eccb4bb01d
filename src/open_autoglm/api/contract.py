"""The OpenAPI contract: every operation's request body, responses and security, in one table.

Routes read their bodies themselves (the hot ones skip FastAPI's parsing) and answer with
pre-rendered JSON, so FastAPI alone would document every body as missing and every answer as
a string. :data:`OPERATIONS` declares, per ``(method, path)``, the pydantic model of the body
and of each success answer and the error statuses that operation can answer on top of those
every operation shares (401/403 with keys, 429 for the rate limit, 413/415/422 with a body,
404 with a path parameter). :func:`install_contract` puts them into the app's
``/openapi.json``, with the models under ``components/schemas`` (pydantic's ``$defs``
hoisted there, so every ``$ref`` resolves) and the API key as ``securitySchemes``.

A test (``tests/security/test_contract.py``) checks that the table names every route, and
runs schemathesis with all its checks against a live server, with and without a key.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema

from open_autoglm.api import schemas as s
from open_autoglm.api.auth import AuthMiddleware
from open_autoglm.api.middleware import RateLimitMiddleware
from open_autoglm.api.routes.keys import KeyCreate
from open_autoglm.spec.model import ModelSpec
from open_autoglm.spec.task import TaskSpec

__all__ = [
    "OPERATIONS",
    "BatchRequest",
    "Body",
    "Operation",
    "allowed_methods",
    "install_contract",
    "undeclared_routes",
]

_REF = "#/components/schemas/{model}"


class BatchRequest(BaseModel):
    """Body of ``POST /v1/tasks/batch``: up to 1,000 task specs, all accepted or none."""

    model_config = ConfigDict(extra="forbid")

    tasks: list[TaskSpec] = Field(min_length=1, max_length=1000)


@dataclass(frozen=True)
class Body:
    """A request body: a pydantic model (JSON) or raw bytes (stored with the request's
    Content-Type as their media type)."""

    model: type[BaseModel] | None = None  # None: raw bytes

    def content(self, refs: Mapping[type[BaseModel], dict[str, Any]]) -> dict[str, Any]:
        if self.model is None:
            binary = {"type": "string", "format": "binary", "minLength": 1}
            return {"application/octet-stream": {"schema": binary}}
        return {"application/json": {"schema": refs[self.model]}}


@dataclass(frozen=True)
class Operation:
    """What one operation takes and answers.

    Args:
        ok: success status -> model of its JSON answer (None: no body).
        errors: error statuses beyond the shared ones.
        body: the request body, if any.
        stream: the 200 may also be an event stream (``Accept: text/event-stream``).
        raw: the 200 is bytes of the given media type instead of JSON.
        openai: errors come in OpenAI's shape (validation: 400, not 422).
    """

    ok: Mapping[int, type[BaseModel] | None]
    errors: frozenset[int] = frozenset()
    body: Body | None = None
    stream: bool = False
    raw: str | None = None
    openai: bool = False


def _op(
    ok: Mapping[int, type[BaseModel] | None],
    *errors: int,
    body: type[BaseModel] | bool | None = False,
    **kw: Any,
) -> Operation:
    parsed = None if body is False else Body(None if body is True else body)
    return Operation(ok=ok, errors=frozenset(errors), body=parsed, **kw)


# The task routes run the spec through the scheduler: 503 while it shuts down, 429 when the
# queue is full. /v1/infer answers a failed task with the status its error implies.
_INFER_ERRORS = (404, 409, 429, 500, 503, 504)

OPERATIONS: dict[tuple[str, str], Operation] = {
    ("POST", "/v1/tasks"): _op({202: s.TaskAccepted, 200: s.TaskAccepted}, 503, body=TaskSpec),
    ("POST", "/v1/tasks/batch"): _op({202: s.BatchAccepted}, 503, body=BatchRequest),
    ("POST", "/v1/infer"): _op({200: s.InferResult}, *_INFER_ERRORS, body=TaskSpec),
    ("GET", "/v1/tasks"): _op({200: s.TaskList}),
    ("GET", "/v1/tasks/{task_id}"): _op({200: s.Task}),
    ("POST", "/v1/tasks/prune-online"): _op({200: s.Pruned}),
    ("POST", "/v1/tasks/{task_id}/cancel"): _op({200: s.Task}, 409),
    ("GET", "/v1/tasks/{task_id}/events"): _op({200: s.TaskEvents}, stream=True),
    ("GET", "/v1/models/registry"): _op({200: s.ModelList}),
    ("POST", "/v1/models/registry"): _op({201: s.ModelEntry}, 409, body=ModelSpec),
    ("GET", "/v1/models/registry/{name}"): _op({200: s.ModelEntry}),
    ("DELETE", "/v1/models/registry/{name}"): _op({204: None}),
    ("GET", "/v1/models"): _op({200: s.OpenAIModelList}, openai=True),
    ("GET", "/v1/models/{model_id}"): _op({200: s.OpenAIModel}, openai=True),
    ("POST", "/v1/embeddings"): _op(
        {200: s.OpenAIEmbeddings}, 404, 409, 500, 503, 504, body=None, openai=True
    ),
    ("POST", "/v1/completions"): _op(
        {200: s.OpenAICompletion}, 404, 409, 500, 503, 504, body=None, openai=True, stream=True
    ),
    ("POST", "/v1/chat/completions"): _op(
        {200: s.OpenAICompletion}, 404, 409, 500, 503, 504, body=None, openai=True, stream=True
    ),
    ("POST", "/v1/artifacts"): _op({201: s.Artifact}, body=True),
    ("GET", "/v1/artifacts"): _op({200: s.ArtifactList}),
    ("GET", "/v1/artifacts/{artifact_id}"): _op({200: s.Artifact}),
    ("GET", "/v1/artifacts/{artifact_id}/content"): _op({200: None}, raw="*/*"),
    ("POST", "/v1/keys"): _op({201: s.ApiKeyCreated}, body=KeyCreate),
    ("GET", "/v1/keys"): _op({200: s.ApiKeyList}),
    ("POST", "/v1/keys/{key_id}/revoke"): _op({200: s.ApiKey}),
    ("GET", "/v1/rulesets"): _op({200: s.RulesetList}),
    ("GET", "/v1/rulesets/{name}"): _op({200: s.Ruleset}),
    ("PUT", "/v1/rulesets/{name}"): _op({200: s.Ruleset, 201: s.Ruleset}, body=None),
    ("DELETE", "/v1/rulesets/{name}"): _op({204: None}),
    ("POST", "/v1/rulesets/{name}/evaluate"): _op({200: s.RulesetEvaluation}, body=None),
    ("POST", "/v1/workflows"): _op({202: s.WorkflowRun}, 503, body=None),
    ("POST", "/v1/workflows/validate"): _op({200: s.WorkflowValidation}, 503, body=None),
    ("GET", "/v1/workflows/runs"): _op({200: s.WorkflowRunList}, 503),
    ("GET", "/v1/workflows/runs/{run_id}"): _op({200: s.WorkflowRun}, 503),
    ("POST", "/v1/workflows/runs/{run_id}/cancel"): _op({200: s.WorkflowRun}, 409, 503),
    ("GET", "/v1/workflows/runs/{run_id}/callbacks"): _op({200: s.RunCallbacks}, 503),
    ("GET", "/v1/workflows/runs/{run_id}/events"): _op({200: s.RunEvents}, 503, stream=True),
    ("GET", "/healthz"): _op({200: s.Health}),
    ("GET", "/readyz"): _op({200: s.Readiness, 503: s.Readiness}),
    ("GET", "/metrics"): _op({200: None}, raw="text/plain"),
    ("GET", "/v1/task-types"): _op({200: s.TaskTypeList}),
    ("GET", "/v1/plugins"): _op({200: s.PluginList}),
}

# Bodies that are declared as ``body=None`` above: the model comes from the route's module,
# filled in by :func:`install_contract` (importing them here would import every area).
_AREA_BODIES: dict[tuple[str, str], tuple[str, str]] = {
    ("POST", "/v1/embeddings"): ("open_autoglm.api.openai_requests", "EmbeddingRequest"),
    ("POST", "/v1/completions"): ("open_autoglm.api.openai_requests", "CompletionRequest"),
    ("POST", "/v1/chat/completions"): ("open_autoglm.api.openai_requests", "ChatCompletionRequest"),
    ("PUT", "/v1/rulesets/{name}"): ("open_autoglm.rules.dsl", "RulesetModel"),
    ("POST", "/v1/rulesets/{name}/evaluate"): (
        "open_autoglm.api.routes.rulesets",
        "EvaluateRequest",
    ),
    ("POST", "/v1/workflows"): ("open_autoglm.api.routes.workflows", "WorkflowSubmission"),
    ("POST", "/v1/workflows/validate"): ("open_autoglm.api.routes.workflows", "WorkflowSubmission"),
}

# Path parameters whose form the server checks beyond the route (a content address is
# 64 lowercase hex characters; storage refuses anything else before it reaches SQL or disk).
PATH_PATTERNS = {"artifact_id": "^[0-9a-f]{64}$"}

_REASONS = {
    400: "Invalid request (OpenAI shape)",
    401: "Missing or invalid API key",
    403: "Not allowed for this key, or blocked by an admission rule",
    404: "Not found",
    409: "Conflicts with the current state",
    413: "Body larger than api.max_body_bytes",
    415: "Body is not application/json",
    422: "Invalid request: every problem with its location",
    429: "Rate limited, queue full, or too many streams (Retry-After)",
    500: "The task failed",
    503: "Unavailable (shutting down, circuit open); Retry-After",
    504: "The task timed out",
}


def _resolve_area_bodies() -> dict[tuple[str, str], Operation]:
    import dataclasses
    import importlib

    out = dict(OPERATIONS)
    for key, (module, name) in _AREA_BODIES.items():
        try:
            model = getattr(importlib.import_module(module), name)
        except ModuleNotFoundError:
            continue  # that area is not part of this build
        out[key] = dataclasses.replace(out[key], body=Body(model))
    return out


def _models(ops: Iterable[Operation]) -> tuple[list[type[BaseModel]], list[type[BaseModel]]]:
    requests: list[type[BaseModel]] = []
    answers: list[type[BaseModel]] = [s.ErrorBody, s.OpenAIErrorBody]
    for op in ops:
        if op.body is not None and op.body.model is not None and op.body.model not in requests:
            requests.append(op.body.model)
        answers.extend(m for m in op.ok.values() if m is not None and m not in answers)
    return requests, answers


def _hoist(node: Any, defs: dict[str, Any]) -> Any:
    """``node`` with nested ``$defs`` moved into ``defs`` and their refs re-pointed there."""
    if isinstance(node, list):
        return [_hoist(v, defs) for v in node]
    if not isinstance(node, dict):
        return node
    for name, sub in (node.pop("$defs", None) or {}).items():
        defs.setdefault(name, _hoist(sub, defs))
    out = {}
    for key, value in node.items():
        if key == "$ref" and isinstance(value, str) and value.startswith("#/$defs/"):
            out[key] = _REF.format(model=value.rsplit("/", 1)[-1])
        else:
            out[key] = _hoist(value, defs)
    return out


def _error_content(openai: bool) -> dict[str, Any]:
    platform = {"$ref": _REF.format(model="ErrorBody")}
    if not openai:
        return {"application/json": {"schema": platform}}
    either = {"anyOf": [{"$ref": _REF.format(model="OpenAIErrorBody")}, platform]}
    return {"application/json": {"schema": either}}


def _statuses(
    op: Operation, params: list[dict[str, Any]], secured: bool, limited: bool
) -> set[int]:
    found = set(op.errors)
    if secured:
        found |= {401, 403}
    if limited:
        found.add(429)
    if op.body is not None:
        found |= {413, 415, 400 if op.openai else 422}
    if params:  # FastAPI validates them (422; 400 on the OpenAI routes)
        found.add(400 if op.openai else 422)
    if any(p.get("in") == "path" for p in params):
        found.add(404)
    return found


def build_openapi(app: FastAPI, *, auth_required: bool) -> dict[str, Any]:
    """The app's OpenAPI document with :data:`OPERATIONS` applied (see the module doc)."""
    doc = get_openapi(title=app.title, version=app.version, routes=app.routes)
    ops = _resolve_area_bodies()
    requests, answers = _models(ops.values())
    keys, generated = models_json_schema(
        [(m, "validation") for m in requests] + [(m, "serialization") for m in answers],
        ref_template=_REF,
    )
    components = doc.setdefault("components", {})
    schemas: dict[str, Any] = components.setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    schemas.update(generated.get("$defs", {}))
    refs = {m: keys[(m, "validation")] for m in requests}
    out_refs = {m: keys[(m, "serialization")] for m in answers}
    components["securitySchemes"] = {
        "bearerAuth": {"type": "http", "scheme": "bearer", "description": "an API key"},
        "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
    }
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            op = ops.get((method.upper(), path))
            if op is None:
                continue  # a plugin's route: documented as FastAPI does
            secured = path not in AuthMiddleware.OPEN_PATHS
            limited = path not in RateLimitMiddleware.OPEN_PATHS
            if op.body is not None:
                operation["requestBody"] = {"required": True, "content": op.body.content(refs)}
            responses: dict[str, Any] = {}
            for status, model in sorted(op.ok.items()):
                entry: dict[str, Any] = {"description": "OK"}
                if op.raw is not None:
                    entry["content"] = {op.raw: {"schema": {"type": "string", "format": "binary"}}}
                elif model is not None:
                    entry["content"] = {"application/json": {"schema": out_refs[model]}}
                if op.stream and status == 200:
                    entry["content"]["text/event-stream"] = {"schema": {"type": "string"}}
                responses[str(status)] = entry
            params = operation.get("parameters", [])
            for param in params:
                if param.get("in") == "path" and param["name"] in PATH_PATTERNS:
                    param["schema"]["pattern"] = PATH_PATTERNS[param["name"]]
            for status in sorted(_statuses(op, params, secured, limited)):
                responses[str(status)] = {
                    "description": _REASONS[status],
                    "content": _error_content(op.openai),
                }
            operation["responses"] = responses
            if secured:
                operation["security"] = [{"bearerAuth": []}, {"apiKeyHeader": []}] + (
                    [] if auth_required else [{}]
                )
            else:
                operation["security"] = []
    defs: dict[str, Any] = {}
    hoisted: dict[str, Any] = _hoist(doc, defs)
    for name, schema in defs.items():
        hoisted["components"]["schemas"].setdefault(name, schema)
    return hoisted


def install_contract(app: FastAPI, *, auth_required: Callable[[], bool]) -> None:
    """Serve :func:`build_openapi`'s document as the app's ``/openapi.json``, built once per
    answer of ``auth_required`` (keys can be switched on while the server runs)."""
    built: dict[bool, dict[str, Any]] = {}

    def openapi() -> dict[str, Any]:
        required = auth_required()
        if required not in built:
            built[required] = build_openapi(app, auth_required=required)
        app.openapi_schema = built[required]
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def allowed_methods(app: FastAPI, path: str) -> list[str]:
    """The methods the contract documents for ``path``, for a 405's ``Allow`` header.

    Starlette names only the first route it tried, and a path served by several routes
    (GET and POST /v1/tasks) needs all of theirs. A literal path wins over a template that
    would also match it (``/v1/tasks/prune-online`` over ``/v1/tasks/{task_id}``).
    """
    paths = app.openapi()["paths"]
    if path in paths:
        item = paths[path]
    else:
        item = next((paths[t] for t in paths if _template(t).fullmatch(path)), {})
    methods = {m.upper() for m in item}
    if "GET" in methods:
        methods.add("HEAD")  # served for every GET route
    return sorted(methods)


@functools.cache
def _template(path: str) -> re.Pattern[str]:
    parts = re.split(r"(\{[^}]+\})", path)
    return re.compile("".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts))


def undeclared_routes(app: FastAPI) -> list[tuple[str, str]]:
    """The app's operations that :data:`OPERATIONS` does not name (a test keeps this empty)."""
    doc = get_openapi(title=app.title, version=app.version, routes=app.routes)
    return [
        (method.upper(), path)
        for path, item in doc["paths"].items()
        for method in item
        if (method.upper(), path) not in OPERATIONS
    ]
