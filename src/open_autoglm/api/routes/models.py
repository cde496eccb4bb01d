"""The model registry: ``/v1/models/registry`` CRUD, and the ``models`` service wiring.

``setup(runtime)`` builds the :class:`~open_autoglm.executors.model_service.ModelService`
(memory budget and cache dir from ``settings.models``), registers it as ``services["models"]``,
hands its per-model batching policy to the scheduler, its cache metrics to ``/metrics``, and,
with ``settings.register_bundled_models``, registers ``minilm`` and ``smollm2`` at start (and,
with ``models.warm_bundled``, loads ``minilm`` in the background).

Weights are uploaded as artifacts (``POST /v1/artifacts``, one per file) and named in an entry
whose source is ``{"artifacts": {"config.json": id, "model.safetensors": id, ...}}``.
"""

from __future__ import annotations

import functools
import logging
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from open_autoglm.api.auth import principal_of, require_admin
from open_autoglm.api.deps import get_runtime, json_body
from open_autoglm.api.responses import JSONResponse
from open_autoglm.errors import ConflictError, NotFoundError
from open_autoglm.executors.model_metrics import ModelCacheCollector
from open_autoglm.executors.model_service import ModelService
from open_autoglm.executors.model_sources import ModelRoots
from open_autoglm.executors.upstream import UpstreamSecrets, upstream_bulkhead
from open_autoglm.resilience.circuit_breaker import CircuitBreaker
from open_autoglm.resilience.outbound import outbound_policy
from open_autoglm.runtime import Runtime

__all__ = ["model_service", "register_bundled_models", "router", "setup"]

log = logging.getLogger(__name__)

# The bundled embedding model, loaded in the background at start (models.warm_bundled).
BUNDLED_EMBEDDING = "minilm"

router = APIRouter(prefix="/v1/models/registry", tags=["models"])
Rt = Annotated[Runtime, Depends(get_runtime)]
ModelName = Annotated[str, Path(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._:@+-]+$")]


def setup(runtime: Runtime) -> None:
    s = runtime.settings
    m = s.models
    service = ModelService(
        runtime.storage,
        cache_dir=m.cache_dir or s.data_dir / "models",
        budget_bytes=max(1, int(m.memory_budget_mb * 1024 * 1024)),
        breaker=lambda _name: CircuitBreaker(
            failure_threshold=m.upstream_failure_threshold, reset_timeout_s=m.upstream_reset_s
        ),
        bulkhead=lambda name, source: upstream_bulkhead(name, source, m),
        # Torch threads come from the executor's CPU allotment: one replica (one thread) per
        # CPU, and one thread per in-process batch (each runs as a 1-CPU task).
        replicas=max(1, int(s.executor.cpu)) if m.replicas is None else m.replicas,
        inprocess_threads=1,
        cpu_slots=max(1, int(s.executor.cpu)),
        # executor.backend = "ray": replicas are Ray actors on the process's Ray connection.
        replica_backend="ray" if s.executor.backend == "ray" else "process",
        executor=s.executor,
        outbound=outbound_policy(s),
        secrets=UpstreamSecrets.from_settings(m),
        roots=ModelRoots.from_settings(s),
        failure_ttl_s=m.load_failure_ttl_s,
        # A GGUF model's engine decodes with one thread per CPU of the allotment.
        generation_threads=max(1, int(s.executor.cpu)),
    )
    runtime.services["models"] = service
    runtime.batch_policy = service.batch_policy
    runtime.metrics.registry.register(ModelCacheCollector(service))

    def start() -> None:
        service.refresh()
        if s.register_bundled_models:
            register_bundled_models(service)
            if m.warm_bundled:
                service.warm([BUNDLED_EMBEDDING])

    runtime.on_start.append(start)
    runtime.on_stop.append(service.close)


def model_service(runtime: Runtime) -> ModelService:
    service: ModelService = runtime.services["models"]
    return service


def register_bundled_models(service: ModelService) -> None:
    """Register ``minilm`` and ``smollm2`` unless already registered (then they are kept).

    SmolLM2 ships as GGUF and is served from that file by llama.cpp (quantised weights).
    """
    if not _exists(service, BUNDLED_EMBEDDING):
        service.register(
            name=BUNDLED_EMBEDDING, source="bundled:all-minilm-l6-v2", task_types=["embedding"]
        )
        log.info("registered bundled model minilm")
    if not _exists(service, "smollm2"):
        service.register(
            name="smollm2",
            source="bundled:smollm2",
            task_types=["text-generation", "chat"],
            max_batch_size=16,
        )
        log.info("registered bundled model smollm2")


def _exists(service: ModelService, name: str) -> bool:
    try:
        service.spec(name)
    except NotFoundError:
        return False
    return True


@router.get("", summary="List registered models with their load state")
async def list_models(request: Request, runtime: Rt) -> JSONResponse:
    service = model_service(runtime)
    reader = principal_of(request).only_owner
    models = await run_in_threadpool(functools.partial(service.list, reader=reader))
    return JSONResponse({"models": models, "cache": service.stats(reader=reader)})


@router.post(
    "",
    status_code=201,
    summary="Register a model (409 if the name is taken)",
    dependencies=[Depends(require_admin)],
)
async def register_model(request: Request, runtime: Rt, replace: bool = False) -> JSONResponse:
    raw = await json_body(request)
    service = model_service(runtime)
    owner = principal_of(request).owner
    try:
        entry = await run_in_threadpool(service.put, raw, replace=replace, principal=owner)
    except ConflictError as exc:
        raise ConflictError(f"{exc.message}; pass ?replace=true to replace it") from None
    return JSONResponse(entry, status_code=201)


@router.get("/{name}", summary="One registry entry")
async def get_model(request: Request, name: ModelName, runtime: Rt) -> JSONResponse:
    reader = principal_of(request).only_owner
    return JSONResponse(await run_in_threadpool(model_service(runtime).get_for, name, reader))


@router.delete(
    "/{name}",
    status_code=204,
    summary="Unregister a model (and unload it)",
    dependencies=[Depends(require_admin)],
)
async def delete_model(name: ModelName, runtime: Rt) -> Response:
    await run_in_threadpool(model_service(runtime).delete, name)
    return Response(status_code=204)
