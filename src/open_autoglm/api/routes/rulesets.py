"""Rulesets: store named, versioned rulesets, evaluate them, and admit tasks by one.

``setup(runtime)`` registers the ``rulesets`` service (a :class:`RulesetCatalog` over the
storage hub, used by the ``rule-inference`` task type) and, when
``settings.admission_ruleset`` names a ruleset, the admission policy that runs it on every
submitted task.
"""

from __future__ import annotations

from typing import Annotated, Any

import pydantic
from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.concurrency import run_in_threadpool

from open_autoglm.api.auth import require_admin
from open_autoglm.api.deps import get_runtime, json_body
from open_autoglm.api.responses import JSONResponse
from open_autoglm.errors import MaxFiringsExceeded, ValidationError
from open_autoglm.rules.admission import RulesetAdmission, SubmitRates
from open_autoglm.rules.agenda import Strategy
from open_autoglm.rules.catalog import RulesetCatalog
from open_autoglm.rules.policy import POLICY_ACTIONS
from open_autoglm.runtime import Runtime
from open_autoglm.spec.task import TaskSpec, pydantic_details
from open_autoglm.tasks.rules import run_rules

__all__ = ["EvaluateRequest", "router", "setup"]

router = APIRouter(prefix="/v1/rulesets", tags=["rulesets"])
Rt = Annotated[Runtime, Depends(get_runtime)]
RulesetName = Annotated[str, Path(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._:@+-]+$")]


class EvaluateRequest(BaseModel):
    """Body of ``POST /v1/rulesets/{name}/evaluate``."""

    model_config = ConfigDict(extra="forbid")

    facts: list[dict[str, Any]] = Field(default_factory=list)
    strategy: Strategy = Strategy.DEPTH
    max_firings: int = Field(default=10_000, ge=1, le=1_000_000)

    @field_validator("facts")
    @classmethod
    def _typed(cls, facts: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for i, f in enumerate(facts):
            if not isinstance(f.get("type"), str):
                raise ValueError(f"fact {i} needs a 'type' string, like {{'type': 'order', ...}}")
        return facts


def setup(runtime: Runtime) -> None:
    catalog = RulesetCatalog(
        runtime.storage.get_ruleset,
        lambda: {**POLICY_ACTIONS, **runtime.plugins.rule_actions()},
    )
    runtime.services["rulesets"] = catalog
    name = runtime.settings.admission_ruleset
    if not name:
        return
    admission = RulesetAdmission(catalog, name, rates=SubmitRates())

    async def ruleset_policy(
        spec: TaskSpec, client: str
    ) -> tuple[TaskSpec, list[tuple[str, dict[str, Any]]]]:
        if catalog.is_fresh(name):  # compiled and cached: no I/O, decide on the loop
            return admission.decide(spec, client)
        return await run_in_threadpool(admission.decide, spec, client)

    runtime.admission_policies.append(ruleset_policy)


def _catalog(runtime: Runtime) -> RulesetCatalog:
    catalog: RulesetCatalog = runtime.services["rulesets"]
    return catalog


@router.get("", summary="List rulesets (name, version, timestamps)")
async def list_rulesets(runtime: Rt) -> JSONResponse:
    return JSONResponse({"rulesets": await run_in_threadpool(runtime.storage.list_rulesets)})


@router.get("/{name}", summary="Get a ruleset with its source")
async def get_ruleset(name: RulesetName, runtime: Rt) -> JSONResponse:
    return JSONResponse(await run_in_threadpool(runtime.storage.get_ruleset, name))


# Rulesets decide admission: changing one is changing the platform, so it needs admin.
@router.put(
    "/{name}",
    summary="Create or replace a ruleset (validated; the version counts up)",
    dependencies=[Depends(require_admin)],
)
async def put_ruleset(name: RulesetName, request: Request, runtime: Rt) -> JSONResponse:
    source = await json_body(request)
    if not isinstance(source, dict):
        raise ValidationError(
            "a ruleset is a JSON object with 'rules'",
            details=[{"loc": [], "msg": f"expected an object, got {type(source).__name__}"}],
        )
    catalog = _catalog(runtime)
    model, _ = catalog.validate(source)  # 422 listing every problem with its location
    document = model.model_dump(mode="json", exclude_unset=True)
    document["name"] = name  # the path names the ruleset; a name in the body is replaced
    row = await run_in_threadpool(runtime.storage.put_ruleset, name, document)
    catalog.invalidate(name)
    return JSONResponse(row, status_code=201 if row["version"] == 1 else 200)


@router.delete(
    "/{name}",
    status_code=204,
    summary="Delete a ruleset",
    dependencies=[Depends(require_admin)],
)
async def delete_ruleset(name: RulesetName, runtime: Rt) -> Response:
    await run_in_threadpool(runtime.storage.delete_ruleset, name)
    _catalog(runtime).invalidate(name)
    return Response(status_code=204)


@router.post("/{name}/evaluate", summary="Run a stored ruleset over facts")
async def evaluate(name: RulesetName, request: Request, runtime: Rt) -> JSONResponse:
    """Fired rules with their bindings, the resulting facts, emitted events and actions."""
    raw = await json_body(request)
    try:
        body = EvaluateRequest.model_validate(raw)
    except pydantic.ValidationError as exc:
        raise ValidationError("invalid evaluate request", details=pydantic_details(exc)) from None
    catalog = _catalog(runtime)
    compiled = await run_in_threadpool(catalog.compiled, name)
    try:
        out = await run_in_threadpool(
            run_rules,
            compiled.rules,
            body.facts,
            strategy=body.strategy,
            max_firings=body.max_firings,
            actions=catalog.actions,
        )
    except MaxFiringsExceeded as exc:
        # The caller's rules loop on the caller's facts: a problem with the input, not a 500.
        raise ValidationError(exc.message, details=exc.details) from None
    return JSONResponse({"ruleset": name, "version": compiled.version, **out})
