"""The ``models`` service: the registry (in storage), loaded models (in a :class:`ModelCache`)
and upstream forwarding, behind one object that handlers reach as ``ctx.service("models")``.

- ``register(...)`` / ``put(entry)`` validate with :class:`~open_autoglm.spec.model.ModelSpec`
  and store the entry; ``get(name)`` / ``list()`` read entries back in their public shape.
- ``lease(name)`` pins a loaded ``hf`` model (Embedder / Generator / Classifier) for a block,
  loading it on first use within the memory budget; sources that live in the artifact store
  are materialised once into ``cache_dir`` (hard links where the file system allows).
- ``upstream(name)`` gives the forwarder of an ``openai``-backend model, behind its circuit
  breaker and bulkhead.
- ``batch_policy(task_type, model)`` is the scheduler's per-model batching hook; it reads only
  memory, because the dispatcher calls it under its lock.

Embedding and classification models are served by worker processes (``executors/workers/``),
or by Ray actors when ``replica_backend`` is ``"ray"`` (``executors/workers/ray_actor.py``), unless
``replicas`` is 0: the service's default (one per CPU of the executor's allotment) or the
entry's ``options.replicas``. Each replica runs one torch thread and holds its own copy of the
weights, so a pool counts ``replicas x`` the model's bytes against the memory budget and
evicting it stops its processes or actors. Models loaded in the server process (generation, and
``replicas: 0``) run with ``inprocess_threads`` torch threads: the scheduler runs up to one
1-CPU batch per CPU at once, so one thread each keeps the total within the allotment.

Stored layout: the registry table has ``name, backend, source, task_types, config``; the
serving fields (dtype, device, max_batch_size, ...) travel in ``config["serving"]`` and the
backend's own data (graph meta ids) in ``config["config"]``, so ``get()`` hands the graph
tasks back exactly the ``config`` they registered.
"""

from __future__ import annotations

import builtins
import contextlib
import functools
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError as PydanticValidationError

from open_autoglm.config import ExecutorSettings, ModelSettings
from open_autoglm.errors import AutoGLMError, NotFoundError, ValidationError
from open_autoglm.executors import model_files
from open_autoglm.executors.model_cache import ModelCache
from open_autoglm.executors.model_sources import ModelRoots, bundled_roots, check_safetensors
from open_autoglm.executors.upstream import Upstream, UpstreamSecrets, upstream_bulkhead
from open_autoglm.executors.workers.base import WorkerLauncher
from open_autoglm.executors.workers.pool import WORKER_ROLES, WorkerPool
from open_autoglm.executors.workers.process import ProcessLauncher
from open_autoglm.executors.workers.ray_actor import RayLauncher
from open_autoglm.executors.workers.zygote import ZygoteUnavailable, shared_zygote
from open_autoglm.resilience.bulkhead import Bulkhead
from open_autoglm.resilience.circuit_breaker import CircuitBreaker
from open_autoglm.resilience.outbound import OutboundPolicy
from open_autoglm.spec.model import (
    ArtifactFilesSource,
    ArtifactSource,
    ModelBackend,
    ModelSpec,
    UpstreamSource,
)

__all__ = ["DEFAULT_BATCH_POLICY", "ModelService"]

log = logging.getLogger(__name__)

DEFAULT_BATCH_POLICY: tuple[int, float] = (32, 0.002)
_MB = 1024 * 1024
# The cache key of a model's gradient copy ("#" is never in a model name).
_GRADIENTS = "#gradients"
_SERVING_FIELDS = ("dtype", "device", "max_batch_size", "max_wait_ms", "memory_mb", "options")

ReplicaBackend = Literal["process", "ray"]
# What starts a pool's replicas, per replica backend (a new launcher for every pool).
_LAUNCHERS: dict[str, Callable[[ExecutorSettings], WorkerLauncher]] = {
    "process": lambda _settings: ProcessLauncher(),
    "ray": RayLauncher,
}


def _details(exc: PydanticValidationError) -> list[dict[str, Any]]:
    return [
        {"loc": [str(p) for p in e["loc"]], "msg": e["msg"]}
        for e in exc.errors(include_url=False, include_context=False, include_input=False)
    ]


def parse_model_spec(raw: Any) -> ModelSpec:
    """Validate a registry entry; a ValidationError listing every problem otherwise."""
    try:
        return ModelSpec.model_validate(raw)
    except PydanticValidationError as exc:
        raise ValidationError("invalid model entry", details=_details(exc)) from None


class ModelService:
    """Registry + cache + upstreams. Thread-safe.

    Args:
        storage: the StorageHub (models registry and artifacts).
        cache_dir: where artifact sources are materialised and GGUF is converted.
        budget_bytes: the model cache's memory budget.
        loader: ``loader(entry) -> wrapper``; default a TextModelLoader over ``cache_dir``.
        breaker: ``breaker(name) -> CircuitBreaker`` for each upstream model.
        bulkhead: ``bulkhead(name, source) -> Bulkhead`` for each upstream model (default:
            the source's bounds, else the ``models.upstream_max_*`` settings' defaults).
        replicas: replicas per embedding/classification model (0: in-process).
        inprocess_threads: torch threads for models loaded in this process.
        cpu_slots: leases of in-process models that may compute at once (None: no bound).
        replica_backend: what a replica is: a worker process (``"process"``) or a Ray actor
            (``"ray"``, as ``executor.backend = "ray"`` asks).
        executor: the executor settings the ray backend connects with (``ray_address``, the
            size of a local instance); default ``ExecutorSettings(backend="ray")``.
        outbound: the URL policy upstream base URLs are checked against at registration and
            every upstream call connects through (default: public addresses only).
        secrets: the upstream keys entries may name (default: none).
        roots: where local (string) sources may be (default: ``cache_dir`` and the bundled
            models' packages).
        failure_ttl_s: how long a failed load is answered from memory instead of retried.
        clock: monotonic seconds (injected for tests).
        generation_threads: decode threads of a GGUF (llama.cpp) model's engine, from the
            executor's CPU allotment (None: the host's CPUs).
    """

    def __init__(
        self,
        storage: Any,
        *,
        cache_dir: Path,
        budget_bytes: int,
        loader: Callable[[dict[str, Any]], Any] | None = None,
        breaker: Callable[[str], CircuitBreaker] | None = None,
        bulkhead: Callable[[str, UpstreamSource], Bulkhead] | None = None,
        replicas: int = 0,
        inprocess_threads: int | None = None,
        cpu_slots: int | None = None,
        replica_backend: ReplicaBackend = "process",
        executor: ExecutorSettings | None = None,
        outbound: OutboundPolicy | None = None,
        secrets: UpstreamSecrets | None = None,
        roots: ModelRoots | None = None,
        failure_ttl_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        generation_threads: int | None = None,
    ) -> None:
        from open_autoglm.ml.text.model_loader import TextModelLoader  # imports no torch

        self.storage = storage
        self.outbound = outbound or OutboundPolicy()
        self.secrets = secrets or UpstreamSecrets()
        self.roots = roots or ModelRoots([Path(cache_dir), *bundled_roots()])
        self.failure_ttl_s = failure_ttl_s
        self._clock = clock
        self._failures: dict[str, tuple[float, AutoGLMError]] = {}
        self.cache_dir = Path(cache_dir)
        self.text_loader = TextModelLoader(self.cache_dir, threads=generation_threads)
        self._load_entry = loader or self.text_loader
        self._breaker = breaker or (lambda _name: CircuitBreaker())
        self._bulkhead = bulkhead or (
            lambda name, source: upstream_bulkhead(name, source, ModelSettings())
        )
        self.replicas = replicas
        self._loading: dict[str, float] = {}  # model -> monotonic start, while it loads
        self._steps: dict[str, str] = {}  # model -> the step its load is at (replica pools)
        if replica_backend not in _LAUNCHERS:
            raise ValidationError(
                f"unknown replica backend {replica_backend!r}; one of {sorted(_LAUNCHERS)}"
            )
        self.replica_backend = replica_backend
        self.executor = executor or ExecutorSettings(backend="ray")
        self.inprocess_threads = inprocess_threads
        self._slots = threading.BoundedSemaphore(cpu_slots) if cpu_slots else None
        self._specs: dict[str, ModelSpec] = {}
        self._meta: dict[str, dict[str, Any]] = {}
        self._upstreams: dict[str, Upstream] = {}
        self._lock = threading.Lock()
        # Loaded wrappers for introspection only; weak, so eviction really frees them.
        self._loaded: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()
        self.cache: ModelCache[Any] = ModelCache(
            self._load, budget_bytes=budget_bytes, estimate=self._estimate
        )

    # -- registry ----------------------------------------------------------------------------

    def refresh(self) -> None:
        """Read every entry from storage into memory (at start: batch_policy reads memory)."""
        for row in self.storage.list_models():
            self._prepare(self._remember(row))

    def register(
        self, *, replace: bool = False, private_to: str | None = None, **entry: Any
    ) -> dict[str, Any]:
        """Validate and store an entry (training tasks call this with keyword arguments, and
        ``private_to`` their owner, so a key's trained model is not every key's)."""
        return self.put(entry, replace=replace, principal=private_to, private_to=private_to)

    def put(
        self,
        raw: Any,
        *,
        replace: bool = False,
        principal: str | None = None,
        private_to: str | None = None,
    ) -> dict[str, Any]:
        """Validate and store an entry; ``principal``: who registers it; ``private_to``: the
        one owner (besides admins) who may see and use it, None for every key."""
        spec = raw if isinstance(raw, ModelSpec) else parse_model_spec(raw)
        self._check_source(spec)
        data = spec.model_dump(mode="json")
        row = self.storage.put_model(
            {
                "name": spec.name,
                "backend": spec.backend.value,
                "source": data["source"],
                "task_types": data["task_types"],
                "config": {
                    "serving": {k: data[k] for k in _SERVING_FIELDS},
                    "config": data["config"],
                },
            },
            replace=replace,
            principal=principal,
            private_to=private_to,
        )
        self._forget(spec.name)  # a replaced entry must not keep serving its old weights
        remembered = self._remember(row)
        self._prepare(remembered)
        return self._public(remembered)

    def _prepare(self, spec: ModelSpec) -> None:
        """Start what a first load of ``spec`` can do ahead (in the background), so the
        first request pays less of it: for a GGUF model, importing llama.cpp."""
        if spec.role != "text-generation" or not isinstance(spec.source, str):
            return
        with contextlib.suppress(AutoGLMError):  # a bad source is reported when it loads
            self.text_loader.prepare(self._entry(spec))

    def _check_source(self, spec: ModelSpec) -> None:
        """Refuse, before storing, a source the server must not use (422 naming the field)."""
        src = spec.source
        if isinstance(src, UpstreamSource):
            self.secrets.check(src.api_key)
            self.outbound.check_url(src.base_url, loc=("source", "base_url"), base=True)
        elif isinstance(src, str) and not src.startswith("bundled:"):
            self.roots.check(src)

    def get(self, name: str) -> dict[str, Any]:
        return self._public(self.spec(name))

    def spec(self, name: str) -> ModelSpec:
        found = self.cached_spec(name)
        if found is not None:
            return found
        return self._remember(self.storage.get_model(name))

    def cached_spec(self, name: str) -> ModelSpec | None:
        """The spec if this service has seen it; never touches storage (safe on an event loop)."""
        with self._lock:
            return self._specs.get(name)

    def list(self, *, reader: str | None = None) -> list[dict[str, Any]]:
        """Every entry ``reader`` may see (all of them for None: an admin, or no keys)."""
        specs = [self._remember(row) for row in self.storage.list_models()]
        return [self._public(s) for s in specs if self.visible(s.name, reader)]

    def visible(self, name: str, reader: str | None) -> bool:
        """Whether ``reader`` (None: an admin, or no keys) may see and use a known model: a
        model private to another owner answers as if it were not registered."""
        if reader is None:
            return True
        with self._lock:
            meta = self._meta.get(name)
        if meta is None:  # registered by another replica: read it once
            try:
                self.spec(name)
            except NotFoundError:
                return False
            with self._lock:
                meta = self._meta.get(name, {})
        private_to = meta.get("private_to")
        return private_to is None or private_to == reader

    def get_for(self, name: str, reader: str | None) -> dict[str, Any]:
        """The entry, if ``reader`` may see it (else the same 404 an unknown name gets)."""
        entry = self.get(name)
        if not self.visible(name, reader):
            raise NotFoundError(f"model {name!r} is not registered")
        return entry

    def delete(self, name: str) -> None:
        self.storage.delete_model(name)
        self._forget(name)

    def _remember(self, row: dict[str, Any]) -> ModelSpec:
        config = row.get("config") or {}
        serving: dict[str, Any] = config.get("serving") or {}
        user_config = config.get("config", {}) if "serving" in config else config
        spec = ModelSpec.model_validate(
            {
                "name": row["name"],
                "backend": row["backend"],
                "source": row["source"],
                "task_types": row["task_types"],
                **serving,
                "config": user_config,
            }
        )
        with self._lock:
            self._specs[spec.name] = spec
            self._meta[spec.name] = {
                "created_at": row.get("created_at", 0.0),
                "updated_at": row.get("updated_at", 0.0),
                "private_to": row.get("private_to"),
            }
        return spec

    def _forget(self, name: str) -> None:
        with self._lock:
            self._failures.pop(name, None)
            self._specs.pop(name, None)
            self._meta.pop(name, None)
            self._upstreams.pop(name, None)
        self.cache.evict(name)
        self.cache.evict(name + _GRADIENTS)

    def _public(self, spec: ModelSpec) -> dict[str, Any]:
        out = spec.model_dump(mode="json")
        with self._lock:
            out.update(self._meta.get(spec.name, {}))
        state = self.cache.state(spec.name)
        out["state"] = state.value if state else "unloaded"
        return out

    # -- serving -----------------------------------------------------------------------------

    @contextmanager
    def lease_for_gradients(self, name: str) -> Iterator[Any]:
        """Pin a float32, torch-Linear copy of the hf model ``name`` that autograd runs
        through (explanations): in the same cache and memory budget as the served models, so
        explaining can never hold memory the budget does not see."""
        spec = self.spec(name)
        if spec.backend is not ModelBackend.HF:
            raise ValidationError(
                f"model {name!r} has backend {spec.backend.value!r}; only 'hf' models load here"
            )
        with self.cache.lease(name + _GRADIENTS) as model:
            yield model

    def _load_gradient_copy(self, name: str) -> Any:
        from open_autoglm.ml.text.loading import load_model

        spec = self.spec(name)
        if spec.role is None:
            raise ValidationError(f"model {name!r} has no role to load for gradients")
        log.info("loading model %s for gradients (float32, in process)", name)
        self._limit_threads()
        path = self.text_loader.resolve_directory(self._entry(spec))
        return load_model(path, spec.role, dtype="float32", linear="torch")

    @contextmanager
    def lease(self, name: str) -> Iterator[Any]:
        """Pin the loaded model ``name`` for the block (loading it first if needed)."""
        spec = self.spec(name)
        if spec.backend is not ModelBackend.HF:
            raise ValidationError(
                f"model {name!r} has backend {spec.backend.value!r}; only 'hf' models load here"
            )
        with self.cache.lease(name) as model:
            role = getattr(model, "role", None)
            if self._slots is None or isinstance(model, WorkerPool) or role not in WORKER_ROLES:
                yield model
                return
            # In-process encoders: at most one batch per CPU computes at a time (embedding
            # tasks ask a fraction of a CPU so replica pools can merge waiting batches).
            # Generation is not bounded here: its engine batches on one thread of its own.
            with self._slots:
                yield model

    def upstream(self, name: str) -> Upstream:
        spec = self.spec(name)
        if not isinstance(spec.source, UpstreamSource):
            raise ValidationError(f"model {name!r} is not an upstream (backend 'openai') model")
        with self._lock:
            up = self._upstreams.get(name)
            if up is None or up.source != spec.source:
                up = self._upstreams[name] = Upstream(
                    name,
                    spec.source,
                    self._breaker(name),
                    self._bulkhead(name, spec.source),
                    policy=self.outbound,
                    secrets=self.secrets,
                )
            return up

    def batch_policy(self, task_type: str, model: str | None) -> tuple[int, float]:
        """(max_batch_size, max_wait_s) for the scheduler; memory only, never storage."""
        with self._lock:
            spec = self._specs.get(model or "")
        if spec is None:
            return DEFAULT_BATCH_POLICY
        wait_ms = spec.max_wait_ms
        if wait_ms is None:
            # A replica pool merges whatever waits for a busy replica by itself, so holding
            # a small batch back only adds latency (2 ms of a 10 ms request at c=1).
            wait_ms = 0.0 if self.replicas_for(spec) else DEFAULT_BATCH_POLICY[1] * 1000.0
        return spec.max_batch_size, wait_ms / 1000.0

    def stats(self, *, reader: str | None = None) -> dict[str, Any]:
        """The cache's figures and each loaded model's; for ``reader``, only the models it
        may see (a name is already something another owner's key must not learn)."""
        stats = self.cache.stats()
        if reader is not None:
            stats["models"] = {
                key: info
                for key, info in stats["models"].items()
                if self.visible(key.removesuffix(_GRADIENTS), reader)
            }
        with self._lock:
            upstreams = dict(self._upstreams)
        stats["upstreams"] = {name: up.state() for name, up in upstreams.items()}
        for name, info in stats["models"].items():
            decode = self._decode_stats(name)
            if decode:
                info["decode"] = decode
            pool = self._loaded.get(name)
            if isinstance(pool, WorkerPool):
                info["replicas"] = pool.stats()
        return stats

    def _decode_stats(self, name: str) -> dict[str, int] | None:
        model = self._loaded.get(name)
        if model is None or getattr(model, "role", None) != "text-generation":
            return None
        e = model.engine()  # cheap: the engine's thread starts on its first submit
        return {"steps": e.steps, "max_active": e.max_active, "active": e.active}

    def close(self) -> None:
        self.cache.clear()

    # -- loading -----------------------------------------------------------------------------

    def replicas_for(self, spec: ModelSpec) -> int:
        """Replicas that serve ``spec`` (0: it loads in this process)."""
        if spec.role not in WORKER_ROLES:
            return 0
        wanted = spec.options.get("replicas")
        return self.replicas if wanted is None else int(wanted)

    def local_entry(self, name: str) -> dict[str, Any]:
        """What :class:`TextModelLoader` takes for ``name``: a local source (artifact sources
        materialised) plus the serving fields; for code that loads its own copy."""
        return self._entry(self.spec(name))

    def _entry(self, spec: ModelSpec) -> dict[str, Any]:
        """What TextModelLoader takes: a local source plus the serving fields."""
        options = dict(spec.options)
        options.pop("replicas", None)
        if spec.role == "text-generation":
            options.setdefault("max_batch_size", spec.max_batch_size)
        source: str
        if isinstance(spec.source, str):
            source = spec.source
            if not source.startswith("bundled:"):  # stored before the roots were narrowed
                source = str(self.roots.check(source))
        else:
            source = str(self.materialise(spec))
        return {
            "name": spec.name,
            "backend": "transformers",
            "source": source,
            "task_types": spec.task_types,
            "dtype": spec.dtype,
            "options": options,
        }

    def warm(self, names: builtins.list[str]) -> threading.Thread:
        """Load ``names`` in a background thread, so that their first request finds them
        loaded or loading; nothing waits for it (``/readyz`` lists what is loading). The
        replica zygote is started first, so its imports overlap the rest of the start."""
        if self.replica_backend == "process" and self.replicas:
            with contextlib.suppress(ZygoteUnavailable):
                shared_zygote().start()

        def run() -> None:
            for name in names:
                log.info("warming model %s in the background", name)
                try:
                    with self.lease(name):
                        pass
                except Exception as exc:  # its first request reports the same failure
                    log.warning("warming model %s failed: %s", name, exc)

        thread = threading.Thread(target=run, name="model-warm", daemon=True)
        thread.start()
        return thread

    def loading_now(self) -> builtins.list[dict[str, Any]]:
        """Models being loaded at this moment, with the seconds spent so far (for /readyz)."""
        now = time.monotonic()
        return [
            {"model": name, "elapsed_s": round(now - t0, 1), "step": self._steps.get(name)}
            for name, t0 in list(self._loading.items())
        ]

    def _load(self, name: str) -> Any:
        """Load ``name``; a failure is a 4xx with its reason, remembered for
        ``failure_ttl_s`` so clients asking again do not each start a load (and replicas)."""
        with self._lock:
            failed = self._failures.get(name)
        if failed is not None and self._clock() < failed[0]:
            raise failed[1]
        try:
            return self._load_now(name)
        except (ValidationError, NotFoundError) as exc:
            error: AutoGLMError = exc
        except Exception as exc:  # a broken model file (here or in a replica): not a 500
            log.warning("model %s failed to load", name, exc_info=True)
            reason = exc.message if isinstance(exc, AutoGLMError) else str(exc)
            msg = f"model {name!r} failed to load: {type(exc).__name__}: {reason[:300]}"
            error = ValidationError(msg, details=[{"loc": ["model"], "msg": msg}])
        with self._lock:
            self._failures[name] = (self._clock() + self.failure_ttl_s, error)
        raise error

    def _load_now(self, name: str) -> Any:
        t0 = time.monotonic()
        self._loading[name] = t0
        try:
            model = self._load_timed(name)
        finally:
            self._loading.pop(name, None)
            self._steps.pop(name, None)
        log.info("loaded model %s in %.1f s", name, time.monotonic() - t0)
        return model

    def _load_timed(self, name: str) -> Any:
        if name.endswith(_GRADIENTS):
            return self._load_gradient_copy(name.removesuffix(_GRADIENTS))
        spec = self.spec(name)
        replicas = self.replicas_for(spec)
        log.info(
            "loading model %s (%s, %d replicas, %s)",
            name,
            spec.role,
            replicas,
            self.replica_backend,
        )
        model: Any
        if replicas:
            entry = self._entry(spec)
            check_safetensors(Path(entry["source"]))  # before any worker process starts
            model = WorkerPool(
                name,
                entry,
                replicas=replicas,
                cache_dir=self.cache_dir,
                launcher=_LAUNCHERS[self.replica_backend](self.executor),
                on_progress=functools.partial(self._steps.__setitem__, name),
            )
        else:
            entry = self._entry(spec)
            if self.text_loader.gguf_source(entry) is None:  # llama.cpp needs no torch
                self._limit_threads()
            model = self._load_entry(entry)
        with contextlib.suppress(TypeError):  # not every wrapper takes weak references
            self._loaded[name] = model
        return model

    def _limit_threads(self) -> None:
        if self.inprocess_threads is None:
            return
        import torch

        if torch.get_num_threads() != self.inprocess_threads:
            torch.set_num_threads(self.inprocess_threads)

    def _estimate(self, name: str) -> int:
        if name.endswith(_GRADIENTS):  # one float32 copy in this process
            return self._estimate_one(self.spec(name.removesuffix(_GRADIENTS)))
        spec = self.spec(name)
        return self._estimate_one(spec) * max(1, self.replicas_for(spec))

    def _estimate_one(self, spec: ModelSpec) -> int:
        if spec.memory_mb:
            return int(spec.memory_mb * _MB)
        src = spec.source
        try:
            if isinstance(src, str):
                return int(self.text_loader.estimate_bytes(self._entry(spec)))
            if isinstance(src, ArtifactFilesSource):
                return sum(
                    int(self.storage.get_artifact(i)["size"])
                    for f, i in src.artifacts.items()
                    if f.endswith(".safetensors")
                )
            if isinstance(src, ArtifactSource):
                return int(self.storage.get_artifact(src.artifact)["size"])
        except Exception:  # an estimate only makes room early; loading reports real errors
            return 0
        return 0

    # -- artifact sources (executors/model_files.py) ------------------------------------------

    def materialise(self, spec: ModelSpec) -> Path:
        """A local model directory for an artifact source (built once, reused afterwards)."""
        return model_files.materialise(self.storage, self.cache_dir, spec)

    def store_directory(self, directory: Path) -> dict[str, str]:
        """Store each file of a model directory as an artifact; ``{file name: id}``."""
        return model_files.store_directory(self.storage, directory)

    def store_file(self, path: Path) -> str:
        """Put a (possibly large) file into the artifact store without reading it into memory."""
        return model_files.store_file(self.storage, path)
