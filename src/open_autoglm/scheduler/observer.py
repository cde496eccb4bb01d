"""What watches the scheduler: Prometheus metrics and the in-memory event bus for streams."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from open_autoglm.scheduler.live_task import LiveTask
from open_autoglm.spec.task import TaskStatus

__all__ = ["EventBus", "PlatformMetrics", "SchedulerWatch"]

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

    def publish(self, task_id: str, kind: str, data: dict[str, Any]) -> None:
        if not self._listeners:
            return
        with self._lock:
            items = list(self._listeners.get(task_id, ()))
        for fn in items:
            fn(kind, data)


class PlatformMetrics:
    """Prometheus metrics, on a registry of their own (several apps can live in one process)."""

    def __init__(self, stats: Callable[[], dict[str, Any]]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.transitions = Counter(
            "autoglm_task_transitions",
            "Task state transitions, by new status",
            ["status"],
            registry=self.registry,
        )
        self.queue_wait = Histogram(
            "autoglm_task_queue_wait_seconds",
            "Time from accepted to started",
            ["task_type"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.run_time = Histogram(
            "autoglm_task_run_seconds",
            "Time from started to finished",
            ["task_type", "status"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.latency = Histogram(
            "autoglm_task_latency_seconds",
            "Time from accepted to finished",
            ["task_type", "status"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_SchedulerCollector(stats))


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
        m = self.metrics
        m.transitions.labels(new.value).inc()
        ttype = task.spec.task_type
        if new is TaskStatus.RUNNING:
            m.queue_wait.labels(ttype).observe(max(0.0, now - task.created_at))
        elif new.terminal:
            if task.started_at is not None:
                m.run_time.labels(ttype, new.value).observe(max(0.0, now - task.started_at))
            m.latency.labels(ttype, new.value).observe(max(0.0, now - task.created_at))
        data: dict[str, Any] = {"status": new.value}
        if task.error and new is not TaskStatus.RUNNING:
            data["error"] = task.error
        self.bus.publish(task.id, "status", data)

    def on_event(self, task_id: str, kind: str, data: dict[str, Any]) -> None:
        self.bus.publish(task_id, kind, data)
