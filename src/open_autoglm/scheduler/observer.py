"""What watches the scheduler: Prometheus metrics and the in-memory event bus for streams."""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from open_autoglm.scheduler.live_task import LiveTask
from open_autoglm.spec.task import TaskStatus

__all__ = ["EventBus", "PlatformMetrics", "SchedulerWatch", "TaskMetrics"]

_LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    300,
)

_QUEUE_WAIT = "autoglm_task_queue_wait_seconds"
_RUN = "autoglm_task_run_seconds"
_LATENCY = "autoglm_task_latency_seconds"
_VALUE = {s: s.value for s in TaskStatus}  # enum ``.value`` is a descriptor call in 3.11

Listener = Callable[[str, dict[str, Any]], None]


class EventBus:
    """Per-task listeners for live event streams (SSE, SDK wait). Listeners must not block."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._listeners: dict[str, list[Listener]] = {}

    def subscribe(self, task_id: str, listener: Listener) -> Callable[[], None]:
        with self._lock:
            self._listeners.setdefault(task_id, []).append(listener)

        def unsubscribe() -> None:
            with self._lock:
                items = self._listeners.get(task_id)
                if items and listener in items:
                    items.remove(listener)
                    if not items:
                        del self._listeners[task_id]

        return unsubscribe

    @property
    def has_listeners(self) -> bool:
        return bool(self._listeners)

    def publish(self, task_id: str, kind: str, data: dict[str, Any]) -> None:
        if not self._listeners:
            return
        with self._lock:
            items = list(self._listeners.get(task_id, ()))
        for fn in items:
            fn(kind, data)


class TaskMetrics(Collector):
    """Per-task counters and latency histograms, exported through prometheus-client.

    The scheduler reports every transition while holding its lock, so updates are already
    serialised: plain lists and a ``bisect`` replace prometheus-client's per-child locks
    and per-bucket loop, which cost more than the rest of a task's bookkeeping. Reads
    (``collect``) copy before they format.
    """

    def __init__(self, buckets: tuple[float, ...] = _LATENCY_BUCKETS) -> None:
        self.bounds = tuple(float(b) for b in buckets)
        self.transitions: dict[str, int] = {}
        # name -> labels -> [counts per bucket (+Inf last), sum]
        self.series: dict[str, dict[tuple[str, ...], list[Any]]] = {
            name: {} for name in _HISTOGRAMS
        }

    def count(self, status: str) -> None:
        self.transitions[status] = self.transitions.get(status, 0) + 1

    def observe(self, name: str, labels: tuple[str, ...], value: float) -> None:
        series = self.series[name]
        h = series.get(labels)
        if h is None:
            h = series[labels] = [[0] * (len(self.bounds) + 1), 0.0]
        h[0][bisect_left(self.bounds, value)] += 1
        h[1] += value

    def collect(self) -> Iterator[Any]:
        counter = CounterMetricFamily(
            "autoglm_task_transitions", "Task state transitions, by new status", labels=["status"]
        )
        for status, n in list(self.transitions.items()):
            counter.add_metric([status], n)
        yield counter
        for name, (doc, labelnames) in _HISTOGRAMS.items():
            family = HistogramMetricFamily(name, doc, labels=list(labelnames))
            for labels, (counts, total) in list(self.series[name].items()):
                cumulative, running = [], 0
                for bound, n in zip((*self.bounds, float("inf")), list(counts), strict=True):
                    running += n
                    cumulative.append((floatToGoString(bound), running))  # type: ignore[no-untyped-call]
                family.add_metric(list(labels), cumulative, sum_value=total)
            yield family


_HISTOGRAMS: dict[str, tuple[str, tuple[str, ...]]] = {
    "autoglm_task_queue_wait_seconds": ("Time from accepted to started", ("task_type",)),
    "autoglm_task_run_seconds": ("Time from started to finished", ("task_type", "status")),
    "autoglm_task_latency_seconds": ("Time from accepted to finished", ("task_type", "status")),
}


class PlatformMetrics:
    """Prometheus metrics, on a registry of their own (several apps can live in one process)."""

    def __init__(self, stats: Callable[[], dict[str, Any]]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.tasks = TaskMetrics()
        self.registry.register(self.tasks)
        self.registry.register(_SchedulerCollector(stats))
        self.online_pruned = Counter(
            "autoglm_online_records_pruned",
            "Online inference records deleted after storage.online_retention_s",
            registry=self.registry,
        )


class _SchedulerCollector(Collector):
    def __init__(self, stats: Callable[[], dict[str, Any]]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[GaugeMetricFamily]:
        s = self._stats()
        depth = GaugeMetricFamily(
            "autoglm_queue_depth", "Queued tasks by priority", labels=["priority"]
        )
        for prio, n in enumerate(s["queue_by_priority"]):
            depth.add_metric([str(prio)], n)
        yield depth
        running = GaugeMetricFamily("autoglm_tasks_running", "Tasks running now")
        running.add_metric([], s["running"])
        yield running
        util = GaugeMetricFamily(
            "autoglm_executor_utilization",
            "Fraction of executor capacity in use",
            labels=["executor", "resource"],
        )
        for name, res in s["utilization"].items():
            for resource, value in res.items():
                util.add_metric([name, resource], value)
        yield util
        yield from s.get("extra_gauges", ())


class SchedulerWatch:
    """The SchedulerObserver: feeds metrics and the event bus."""

    def __init__(self, metrics: PlatformMetrics, bus: EventBus) -> None:
        self.metrics = metrics
        self.bus = bus

    def on_transition(
        self, task: LiveTask, old: TaskStatus | None, new: TaskStatus, now: float
    ) -> None:
        m = self.metrics.tasks
        ttype = task.spec.task_type
        if new is TaskStatus.RUNNING:
            m.observe(_QUEUE_WAIT, (ttype,), max(0.0, now - task.created_at))
        elif new.terminal:
            labels = (ttype, _VALUE[new])
            if task.started_at is not None:
                m.observe(_RUN, labels, max(0.0, now - task.started_at))
            m.observe(_LATENCY, labels, max(0.0, now - task.created_at))
        m.count(_VALUE[new])
        if self.bus.has_listeners:
            data: dict[str, Any] = {"status": _VALUE[new]}
            if task.error and new is not TaskStatus.RUNNING:
                data["error"] = task.error
            self.bus.publish(task.id, "status", data)

    def on_event(self, task_id: str, kind: str, data: dict[str, Any]) -> None:
        self.bus.publish(task_id, kind, data)
