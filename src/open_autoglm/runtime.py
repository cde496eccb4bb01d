"""The composition root: storage hub + plugins + executors + scheduler, wired from Settings.

``Runtime`` is also the in-process Python API: ``submit`` takes a spec (dict or TaskSpec)
and returns a future without any HTTP in between.
"""

from __future__ import annotations

import functools
import gc
import logging
import math
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from open_autoglm.config import Settings, load_settings
from open_autoglm.errors import NotFoundError, ValidationError
from open_autoglm.executors.base import Job
from open_autoglm.executors.local import LocalExecutor
from open_autoglm.futures import Promise
from open_autoglm.plugins.registry import PluginRegistry
from open_autoglm.scheduler.live_task import LiveTask
from open_autoglm.scheduler.observer import EventBus, PlatformMetrics, SchedulerWatch
from open_autoglm.scheduler.resources import Capacity
from open_autoglm.scheduler.service import Scheduler
from open_autoglm.spec.principal import STATIC_OWNER
from open_autoglm.spec.task import TaskSpec, parse_task_spec
from open_autoglm.storage.hub import StorageHub, TaskWrite
from open_autoglm.task_handle import TaskHandle

_GC_LOCK = threading.Lock()
_GC_TUNED: list[Runtime] = []  # runtimes in this process that tuned the collector
_GC_BEFORE: list[int] = []  # the thresholds before the first of them did

__all__ = ["Runtime", "public_task"]

log = logging.getLogger(__name__)


class Runtime:
    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or load_settings()
        s = self.settings
        s.data_dir.mkdir(parents=True, exist_ok=True)
        self.storage = StorageHub(s.storage_url(), s.data_dir, commit_batch=s.storage.commit_batch)
        self.plugins = PluginRegistry()
        self.bus = EventBus()
        self.services: dict[str, Any] = {"storage": self.storage, "tasks": TaskReader(self)}
        # This process among the replicas sharing the database (see storage/replicas.py).
        self.replica_id = uuid.uuid4().hex
        self._lease_stop = threading.Event()
        self._lease_thread: threading.Thread | None = None
        self._prune_stop = threading.Event()
        self._prune_thread: threading.Thread | None = None
        self.scheduler = Scheduler(
            self.storage,
            resolve_type=self.plugins.task_type,
            make_job=self._make_job,
            max_queued=s.scheduler.max_queued,
            aging_s=s.scheduler.aging_s,
            retry_base_s=s.scheduler.retry_base_s,
            retry_max_s=s.scheduler.retry_max_s,
            default_timeout_s=s.scheduler.default_timeout_s,
            online_reserve_cpu=s.scheduler.online_reserve_cpu,
            task_write=TaskWrite,
            owner=self.replica_id,
            claim=lambda: self.storage.replicas.claim_orphans(
                self.replica_id, time.time(), self.settings.scheduler.lease_s
            ),
        )
        self.metrics = PlatformMetrics(self.scheduler.stats)
        self.scheduler.observer = SchedulerWatch(self.metrics, self.bus)
        self._started = False
        self._drain_deadline: float | None = None  # monotonic; set by begin_drain
        # Routers that later areas (models, rules, workflows) add to the API.
        self.extra_routers: list[Any] = []
        # Admission policies, see ``admit``.
        self.admission_policies: list[Any] = []
        # Called after storage and scheduler are up (in order) / before they go down
        # (in reverse): areas start their own workers here.
        self.on_start: list[Callable[[], None]] = []
        self.on_stop: list[Callable[[], None]] = []
        # Called on every lease renewal, after this replica took over dead replicas' tasks:
        # areas with their own replicated state (workflow runs) take over theirs.
        self.on_lease: list[Callable[[], None]] = []

    @property
    def batch_policy(self) -> Any:
        """``(task_type, model) -> (max_batch_size, max_wait_s)`` for dynamic batching."""
        return self.scheduler.batch_policy

    @batch_policy.setter
    def batch_policy(self, policy: Any) -> None:
        self.scheduler.batch_policy = policy

    # -- lifecycle ---------------------------------------------------------------------------

    def discover_plugins(self) -> None:
        """Load the configured plugins (start does; offline validators call it alone)."""
        s = self.settings
        self.plugins.discover(
            dirs=s.plugins.dirs, entry_points=s.plugins.entry_points, config=s.plugins.config
        )

    def start(self) -> Runtime:
        if self._started:
            return self
        s = self.settings
        self.storage.open()
        self.discover_plugins()
        common: dict[str, Any] = {
            "capacity": Capacity(
                cpu=s.executor.cpu, memory_mb=s.executor.memory_mb, gpu=s.executor.gpu
            ),
            "threads": s.executor.threads,
            "save_artifact": self.storage.put_artifact,
            "load_artifact": self.storage.read_artifact,
            "record_artifact": self.storage.record_artifact,
            "artifact_root": str(self.storage.files.root),
            "services": self.services,
            "process_env": {
                "plugins": s.plugins.model_dump(mode="json"),
                "environ": {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
            },
        }
        executor: LocalExecutor
        if s.executor.backend == "ray":  # imported only when used: Ray is an optional extra
            from open_autoglm.executors.ray_executor import RayExecutor

            executor = RayExecutor(settings=s.executor, **common)
        else:
            executor = LocalExecutor(name="local", **common)
        executor.start()
        self.scheduler.add_executor(executor)
        self._executor = executor
        self._tune_gc()
        self.storage.replicas.register(self.replica_id, time.time())
        self.scheduler.start()
        # Renew this replica's lease; take over the tasks of replicas whose lease lapsed.
        self._lease_thread = _every(
            "autoglm-lease", self._lease_stop, s.scheduler.lease_s / 3, self._renew_lease
        )
        if s.storage.online_retention_s > 0:
            self._prune_thread = _every(
                "autoglm-prune",
                self._prune_stop,
                s.storage.prune_interval_s,
                self._prune_online,
                at_start=True,
            )
        for fn in self.on_start:
            fn()
        self.plugins.call_hooks("on_startup")
        self._started = True
        return self

    def begin_drain(self, grace_s: float) -> None:
        """Start draining (on SIGTERM): nothing new starts; :meth:`stop` then waits up to
        ``grace_s`` from now for running tasks before it hands the rest over as after a
        crash (durable ones re-queue on the next start, here or on another replica)."""
        self._drain_deadline = time.monotonic() + grace_s
        cancelled = self.scheduler.pause()
        log.warning(
            "draining for %.1f s: %d running tasks may finish, %d queued online requests cancelled",
            grace_s,
            self.scheduler.stats()["running"],
            len(cancelled),
        )

    def _wait_drained(self) -> None:
        deadline = self._drain_deadline
        if deadline is None:
            return
        while self.scheduler.stats()["running"] and time.monotonic() < deadline:
            time.sleep(0.05)
        left = self.scheduler.stats()["running"]
        if left:
            log.warning("grace period over: %d running tasks handed over unfinished", left)

    def stop(self) -> None:
        if not self._started:
            return
        self._wait_drained()
        self.plugins.call_hooks("on_shutdown")
        for fn in reversed(self.on_stop):
            try:
                fn()
            except Exception:
                log.exception("shutdown hook failed")
        self._lease_stop.set()
        self._prune_stop.set()
        for thread in (self._lease_thread, self._prune_thread):
            if thread is not None:
                thread.join(timeout=10)
        self._lease_thread = self._prune_thread = None
        self.scheduler.stop()
        self._executor.shutdown(wait=False)
        try:  # our unfinished tasks become claimable at once, not after the lease
            self.storage.replicas.unregister(self.replica_id)
        except Exception:
            log.exception("could not unregister replica %s", self.replica_id)
        self.storage.close()
        self._untune_gc()
        self._started = False

    def executor_info(self) -> dict[str, Any]:
        """The executor's backend, capacity and (on Ray) cluster, for /readyz."""
        return self._executor.describe() if self._started else {}

    def __enter__(self) -> Runtime:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the Python API ----------------------------------------------------------------------

    def parse(self, raw: Any) -> TaskSpec:
        return parse_task_spec(
            raw,
            self.plugins.param_fields,
            max_depth=self.settings.api.max_input_depth,
            check_params=self._check_params,
        )

    def _check_params(self, task_type: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        import pydantic

        from open_autoglm.spec.task import pydantic_details

        try:
            self.plugins.task_type(task_type).params_model.model_validate(params)
        except pydantic.ValidationError as exc:
            return pydantic_details(exc, ("params",))
        return []

    async def admit(
        self, spec: TaskSpec, *, client: str
    ) -> tuple[TaskSpec, list[tuple[float, str, Any]]]:
        """Run the admission policies in order; returns the (possibly rewritten) spec and the
        decision events to record on the task.

        A policy is ``async policy(spec, client) -> (spec, [(kind, data), ...])``; it blocks
        a task by raising :class:`~open_autoglm.errors.PolicyBlockedError`.
        """
        events: list[tuple[float, str, Any]] = []
        for policy in self.admission_policies:
            spec, decided = await policy(spec, client)
            now = time.time()
            events.extend((now, kind, data) for kind, data in decided)
        return spec, events

    def submit(
        self,
        spec: TaskSpec | dict[str, Any],
        *,
        durable: bool = True,
        events: list[tuple[float, str, Any]] | None = None,
        principal: str | None = None,
        artifact_reader: str | None = None,
    ) -> Future[tuple[dict[str, Any], bool]]:
        """Accept a task; the future gives ``(task, created)`` once it is durable.

        ``principal``: whose task it is (an API key's owner; None without keys).
        ``artifact_reader``: the artifacts the task reads must be visible to this owner (None:
        any artifact, as for an admin or the keyless setup).
        """
        if not isinstance(spec, TaskSpec):
            spec = self.parse(spec)
        self.check_references(spec, artifact_reader=artifact_reader)
        return self.scheduler.submit(spec, durable=durable, events=events, principal=principal)

    def check_references(self, spec: TaskSpec, *, artifact_reader: str | None = None) -> None:
        """Refuse a task naming a model or artifact that does not exist, or a model or an
        artifact ``artifact_reader`` may not see (answered as not found, like a foreign task
        id)."""
        from open_autoglm.tasks.references import check_references

        if not self.plugins.has_task_type(spec.task_type):
            return  # the scheduler's own check names the unknown type
        models = self.services.get("models")
        check_references(
            spec,
            self.plugins.task_type(spec.task_type),
            model_exists=None
            if models is None
            else functools.partial(_model_exists, models, reader=artifact_reader),
            artifact_exists=functools.partial(
                _artifact_exists, self.storage, principal=artifact_reader
            ),
        )

    def parse_many(self, raws: Any, *, limit: int) -> list[TaskSpec]:
        """Validate a list of specs; one ValidationError naming every problem by index."""
        if not isinstance(raws, list) or not raws:
            raise ValidationError(
                "tasks must be a non-empty list of task specs",
                details=[{"loc": ["tasks"], "msg": "expected a non-empty list"}],
            )
        if len(raws) > limit:
            raise ValidationError(
                f"at most {limit} tasks per batch",
                details=[{"loc": ["tasks"], "msg": f"{len(raws)} tasks; the limit is {limit}"}],
            )
        specs: list[TaskSpec] = []
        problems: list[dict[str, Any]] = []
        for i, raw in enumerate(raws):
            try:
                specs.append(self.parse(raw))
            except ValidationError as exc:
                problems.extend(
                    {"loc": ["tasks", i, *d["loc"]], "msg": d["msg"]} for d in exc.details
                )
        if problems:
            bad = sorted({int(p["loc"][1]) for p in problems})
            raise ValidationError(
                f"{len(bad)} of {len(raws)} task specs are invalid (indices {bad[:10]}); "
                "nothing was submitted",
                details=problems,
            )
        return specs

    def track(self, task_id: str) -> TaskHandle:
        """The one handle to follow a task to its end (awaitable, or ``.result()``)."""
        return TaskHandle(task_id, self.scheduler.live_task(task_id), self.get_task)

    def submit_tracked(
        self,
        spec: TaskSpec | dict[str, Any],
        *,
        durable: bool = True,
        events: list[tuple[float, str, Any]] | None = None,
        principal: str | None = None,
    ) -> Future[dict[str, Any]]:
        """Submit; the future gives the finished task (with ``result``) once it is stored."""
        done: Future[dict[str, Any]] = Promise()

        def accepted(f: Future[tuple[dict[str, Any], bool]]) -> None:
            try:
                task, _ = f.result()
            except BaseException as exc:
                done.set_exception(exc)
                return
            # Runs right after acceptance, before the task can finish and leave `live`.
            self.track(task["id"]).add_done_callback(lambda d: _relay(d, done))

        self.submit(spec, durable=durable, events=events, principal=principal).add_done_callback(
            accepted
        )
        return done

    def run(self, spec: TaskSpec | dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        """Submit and wait: the finished task with its ``result``."""
        task, _ = self.submit(spec).result(timeout)
        return self.wait(task["id"], timeout)

    def wait(self, task_id: str, timeout: float | None = None) -> dict[str, Any]:
        """The finished task, once its final state is stored (online tasks included)."""
        return self.track(task_id).result(timeout)

    def pending_log(self, task_id: str) -> Future[Any] | None:
        """The commit of an online task's record when it was answered before being stored
        (None otherwise): wait on it before reading the task's stored events."""
        lt = self.scheduler.live_task(task_id)
        return lt.logged if lt is not None else None

    def get_task(self, task_id: str, *, with_result: bool = True) -> dict[str, Any]:
        lt = self.scheduler.live_task(task_id)
        # Live until stored: a running task, or a finished one whose commit is in flight (an
        # online task is answered before its record is stored).
        if lt is not None:
            task = lt.as_dict()
            if with_result and task["status"] == "succeeded":
                task["result"] = lt.result  # finished, its commit still in flight
            return task
        row = self.storage.get_task(task_id)
        task = public_task(row)
        if with_result and task["status"] == "succeeded":
            _, task["result"] = self.storage.get_result(task_id)
        return task

    def _prune_online(self) -> None:
        """Delete online inference records past ``storage.online_retention_s`` (at start and
        every ``storage.prune_interval_s``). Each request leaves one (row, events, result:
        ~9 KB for a MiniLM embedding), so a busy server would otherwise grow its database by
        gigabytes an hour. Durable tasks are kept."""
        retention = self.settings.storage.online_retention_s
        n = self.prune_online(retention)
        if n:
            log.info("deleted %d online inference records older than %.0f s", n, retention)

    def prune_online(self, older_than_s: float) -> int:
        """Delete the online inference records that ended more than ``older_than_s`` seconds
        ago, with their events and results, now; returns how many went (also counted in
        /metrics). Durable tasks and online ones that recorded an artifact are kept."""
        if older_than_s < 0:
            raise ValidationError(
                "older_than_s must be >= 0",
                details=[{"loc": ["older_than_s"], "msg": "must be >= 0"}],
            )
        n = self.storage.prune_online(time.time() - older_than_s, stop=self._prune_stop)
        if n:
            self.metrics.online_pruned.inc(n)
        return n

    def _renew_lease(self) -> None:
        """One beat: renew; if another replica declared us dead meanwhile, stop running what
        it took over; then take over from replicas whose lease lapsed."""
        if not self.storage.replicas.heartbeat(self.replica_id, time.time()):
            ids = self.scheduler.durable_ids()
            lost = set(ids) - self.storage.replicas.still_owned(ids, self.replica_id)
            stopped = self.scheduler.abandon(lost)
            log.error(
                "replica %s missed its lease (%.0f s); other replicas took over %d of its "
                "tasks, which it stops running (those already started may run twice)",
                self.replica_id,
                self.settings.scheduler.lease_s,
                stopped,
            )
        counts = self.scheduler.recover()
        if any(counts.values()):
            log.warning("took over tasks of a dead replica: %s", counts)
        for fn in self.on_lease:
            fn()

    def _tune_gc(self) -> None:
        """Collect less often, and never again walk what start-up loaded.

        Every task in flight owns a few dozen container objects; at Python's default
        threshold the cyclic collector runs every 700 allocations and its older generations
        re-scan everything alive, which cost half the CPU at a few thousand tasks per second.
        Freezing moves the start-up heap (modules, plugins, models) out of the collector's
        reach; reference counting still frees it. The same tuning Instagram documented for
        its Django fleet (``gc.freeze``, Python 3.7+).
        """
        threshold = self.settings.scheduler.gc_threshold
        if not threshold:
            return
        with _GC_LOCK:
            if not _GC_TUNED:
                _GC_BEFORE[:] = gc.get_threshold()
            _GC_TUNED.append(self)
            gc.set_threshold(threshold, *_GC_BEFORE[1:])
            gc.freeze()

    def _untune_gc(self) -> None:
        """Back to Python's collector once the last tuned runtime in this process stops."""
        with _GC_LOCK:
            if self not in _GC_TUNED:
                return
            _GC_TUNED.remove(self)
            if not _GC_TUNED:
                gc.set_threshold(*_GC_BEFORE)
                gc.unfreeze()

    def _make_job(self, lt: LiveTask) -> Job:
        spec = lt.spec
        return Job(
            task_id=lt.id,
            task_type=lt.task_type,
            model=spec.model,
            input=spec.payload(),
            params=lt.params,
            metadata=spec.metadata,
            cpu_threads=max(1, math.ceil(lt.shape[0])),
            attempt=lt.attempts,
            cpu=lt.shape[0],
            memory_mb=lt.shape[1],
            gpu=lt.shape[2],
        )


def _relay(src: Future[dict[str, Any]], dst: Future[dict[str, Any]]) -> None:
    exc = src.exception()
    if exc is not None:
        dst.set_exception(exc)
    else:
        dst.set_result(src.result())


class TaskReader:
    """The ``tasks`` service: a handler reads another task only as its own task's owner may
    (``explain`` explains a prediction by task id; a key must not reach another's inputs)."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    def get_as(self, task_id: str, viewer_task_id: str) -> dict[str, Any]:
        """The task with its result, if the task ``viewer_task_id`` may see it."""
        viewer = self._runtime.get_task(viewer_task_id, with_result=False).get("owner")
        task = self._runtime.get_task(task_id)
        if viewer is not None and viewer != STATIC_OWNER and task.get("owner") != viewer:
            raise NotFoundError(f"task {task_id} not found")
        return task

    def owner_of(self, task_id: str) -> str | None:
        """Whose task it is: None for an admin's or the keyless setup's (what it makes is
        shared), else the owner of the key that submitted it."""
        owner = self._runtime.get_task(task_id, with_result=False).get("owner")
        return None if owner in (None, STATIC_OWNER) else str(owner)

    def own_artifacts(self, task_id: str, name_prefix: str = "") -> list[dict[str, Any]]:
        """Artifacts a task recorded (on any attempt), newest first: a retried training task
        finds its last checkpoint here."""
        rows = self._runtime.storage.list_artifacts(limit=10_000, task_id=task_id)
        return [
            {"id": r["id"], "name": r["name"], "created_at": r["created_at"]}
            for r in rows
            if str(r["name"]).startswith(name_prefix)
        ]


def public_task(row: dict[str, Any]) -> dict[str, Any]:
    """A stored task row in the API's shape."""
    return {
        "id": row["id"],
        "task_type": row["task_type"],
        "model": row["model"],
        "status": row["status"],
        "priority": row["priority"],
        "attempts": row["attempts"],
        "max_retries": row["max_retries"],
        "idempotency_key": row["idempotency_key"],
        "created_at": row["created_at"],
        "started_at": row["started_at"],
        "finished_at": row["finished_at"],
        "error": row["error"],
        "progress": None,
        "spec": row["spec"],
        "seq": row.get("seq"),
        "owner": row.get("principal"),
    }


def _every(
    name: str,
    stop: threading.Event,
    interval_s: float,
    beat: Callable[[], None],
    *,
    at_start: bool = False,
) -> threading.Thread:
    """A daemon thread calling ``beat`` every ``interval_s`` (and once at once if
    ``at_start``) until ``stop`` is set. A failing beat is logged and tried again next time:
    the database may be briefly unreachable."""
    stop.clear()

    def run() -> None:
        if at_start and not stop.is_set():
            _guarded(name, beat)
        while not stop.wait(interval_s):
            _guarded(name, beat)

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    return thread


def _guarded(name: str, beat: Callable[[], None]) -> None:
    try:
        beat()
    except Exception:
        log.exception("%s failed", name)


def _model_exists(models: Any, name: str, *, reader: str | None = None) -> bool:
    # The cache answers without storage; a miss (registered by another replica, or absent)
    # asks storage once. A model private to another owner is not there for ``reader``.
    if models.cached_spec(name) is None:
        try:
            models.spec(name)
        except NotFoundError:
            return False
    return reader is None or bool(models.visible(name, reader))


def _artifact_exists(storage: Any, artifact_id: str, *, principal: str | None = None) -> bool:
    try:
        storage.get_artifact(artifact_id, principal=principal)
    except (NotFoundError, ValidationError):
        return False
    return True
