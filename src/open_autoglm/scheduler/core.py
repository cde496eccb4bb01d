"""The scheduler's decisions as a pure core: events and the time in, instructions out.

:class:`SchedulerCore` owns the queue (two lanes: online work and jobs), the resource pool,
the batch groups and the timers. It never reads a clock, takes a lock, writes storage or
calls an executor: its adapter (:mod:`open_autoglm.scheduler.service`) does, following the
instructions it returns. Every change of a task's status goes through one table,
``TRANSITIONS``, keyed by ``(from, to)``.

Online work has reserved room: online tasks (``/v1/infer``, the OpenAI routes) are placed
from their own lane before any job, and may use ``online_reserve_cpu`` CPUs per executor
beyond its capacity, which jobs never use. So a prediction never waits for a slot behind
long training jobs (see ``docs/scheduling.md``).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

from open_autoglm.errors import ConflictError
from open_autoglm.executors.base import Outcome, OutcomeStatus
from open_autoglm.scheduler.batching import DEFAULT_POLICY, BatchGroups, BatchPolicy, BatchRun
from open_autoglm.scheduler.events import (
    CancelRequested,
    Dropped,
    Enqueued,
    Event,
    Finish,
    Instruction,
    JobEnded,
    Requeue,
    Start,
    Stop,
    StopSignal,
    TakenOver,
    TaskArrived,
    TaskRecovered,
    TasksLost,
    Timer,
    TimerKind,
)
from open_autoglm.scheduler.live_task import LiveTask
from open_autoglm.scheduler.priority_queue import AgingPriorityQueue, QueueEntry, Shape
from open_autoglm.scheduler.resources import Capacity, ResourcePool
from open_autoglm.spec.task import TaskStatus

__all__ = ["FORCE_TIMEOUT_GRACE_S", "TRANSITIONS", "SchedulerCore"]

# How long a task that ignores its timeout keeps running before it is failed anyway.
FORCE_TIMEOUT_GRACE_S = 2.0

Q, R, S, F, C = (
    TaskStatus.QUEUED,
    TaskStatus.RUNNING,
    TaskStatus.SUCCEEDED,
    TaskStatus.FAILED,
    TaskStatus.CANCELLED,
)

# What one transition carries besides the task and the time (the executor, the outcome ...).
_Change = dict[str, Any]
_Step = Callable[["SchedulerCore", LiveTask, TaskStatus, float, _Change, list[Instruction]], None]


class SchedulerCore:
    """Queue, placement, batching, deadlines and retries, driven by events.

    Not thread-safe: the adapter calls it under its lock. ``now`` is whatever clock the
    adapter injects (seconds); every timer is compared against it, never against the wall.
    """

    TRANSITIONS: ClassVar[dict[tuple[TaskStatus, TaskStatus], _Step]]

    def __init__(
        self,
        *,
        aging_s: float = 30.0,
        retry_base_s: float = 0.5,
        retry_max_s: float = 60.0,
        default_timeout_s: float | None = None,
        online_reserve_cpu: float = 1.0,
    ) -> None:
        reserve_after = max(aging_s, 1.0)
        self.online: AgingPriorityQueue[LiveTask] = AgingPriorityQueue(
            aging_s=aging_s, reserve_after_s=reserve_after
        )
        self.jobs: AgingPriorityQueue[LiveTask] = AgingPriorityQueue(
            aging_s=aging_s, reserve_after_s=reserve_after
        )
        self.aging_s = aging_s
        self.retry_base_s = retry_base_s
        self.retry_max_s = retry_max_s
        self.default_timeout_s = default_timeout_s
        self.online_reserve_cpu = online_reserve_cpu
        self.pool = ResourcePool()
        self.batches = BatchGroups()
        self.batch_policy: BatchPolicy = lambda task_type, model: DEFAULT_POLICY
        # Tasks the core answers for: queued, waiting for a retry, or holding a slot.
        self.tasks: dict[str, LiveTask] = {}
        self.timers: list[Timer] = []
        self._timer_n = 0
        self.started_total = 0
        self.paused = False  # a draining server: timers still fire, nothing new starts

    # -- reads -------------------------------------------------------------------------------

    def add_executor(self, name: str, capacity: Capacity) -> None:
        self.pool.add(name, capacity)

    def queued(self) -> int:
        return len(self.online) + len(self.jobs)

    def depth_by_priority(self) -> list[int]:
        return [
            a + b
            for a, b in zip(
                self.online.depth_by_priority(), self.jobs.depth_by_priority(), strict=True
            )
        ]

    def next_timer(self) -> float | None:
        """When the earliest timer fires (the adapter sleeps until then at most)."""
        return self.timers[0].at if self.timers else None

    # -- events ------------------------------------------------------------------------------

    def handle(
        self, event: Event, now: float, out: list[Instruction] | None = None
    ) -> list[Instruction]:
        """Apply one event; returns what the adapter must do about it, in order (appended to
        ``out`` when given, so a pass over many events builds one list)."""
        if out is None:
            out = []
        _HANDLERS[type(event)](self, event, now, out)
        return out

    def advance(self, now: float) -> list[Instruction]:
        """Fire the timers due by ``now``, then place what fits."""
        out: list[Instruction] = []
        self._fire_timers(now, out)
        self._dispatch(now, out)
        return out

    def _on_arrived(self, ev: TaskArrived, now: float, out: list[Instruction]) -> None:
        lt = ev.task
        if lt.status is Q:  # not cancelled while it waited to be queued
            self.tasks[lt.id] = lt
            out.append(Enqueued(lt))
            self._enqueue(lt)

    def _on_recovered(self, ev: TaskRecovered, now: float, out: list[Instruction]) -> None:
        self.tasks[ev.task.id] = ev.task
        self._enqueue(ev.task)

    def _on_job_ended(self, ev: JobEnded, now: float, out: list[Instruction]) -> None:
        lt = self.tasks.get(ev.task_id)
        if lt is None:
            return
        self._release(lt)
        if lt.zombie or lt.status is not R:
            if lt.status.terminal:
                del self.tasks[lt.id]  # its slot was the last thing it held
            return
        lt.deadline = None
        outcome = ev.outcome
        if outcome.status is OutcomeStatus.SUCCEEDED:
            self._transition(lt, S, now, {"outcome": outcome, "has_result": True}, out)
        elif outcome.status is OutcomeStatus.CANCELLED or (
            lt.cancel_requested and lt.cancel_requested != StopSignal.TIMEOUT
        ):
            error: dict[str, Any] = {
                "code": "cancelled",
                "message": lt.cancel_requested or "cancelled",
            }
            self._transition(lt, C, now, {"outcome": outcome, "error": error}, out)
        elif outcome.retryable and lt.attempts <= lt.spec.max_retries:
            self._transition(lt, Q, now, {"outcome": outcome}, out)
        else:
            # Whether it could have been retried travels with the error, so callers that
            # retry on their own (workflow steps) follow the handler's verdict, not a guess.
            error = {**(outcome.error or {}), "retryable": bool(outcome.retryable)}
            self._transition(lt, F, now, {"outcome": outcome, "error": error}, out)

    def _on_cancel(self, ev: CancelRequested, now: float, out: list[Instruction]) -> None:
        lt = ev.task
        if lt.status is Q:
            self._unqueue(lt)
            self._drop_timers(lt.id)
            error = {"code": "cancelled", "message": ev.reason}
            self._transition(lt, C, now, {"error": error}, out)
        elif lt.status is R:
            self._stop(lt, ev.reason, StopSignal.CANCELLED, out)

    def _on_taken_over(self, ev: TakenOver, now: float, out: list[Instruction]) -> None:
        for lt in ev.tasks:
            if lt.status is Q:
                self._unqueue(lt)
                self._forget(lt)
                out.append(Dropped(lt))
            elif lt.status is R:
                self._stop(lt, "taken over by another replica", StopSignal.CANCELLED, out)

    def _on_lost(self, ev: TasksLost, now: float, out: list[Instruction]) -> None:
        for lt in ev.tasks:
            self._release(lt)
            self._forget(lt)

    # -- transitions (one table) -------------------------------------------------------------

    def _transition(
        self, lt: LiveTask, new: TaskStatus, now: float, change: _Change, out: list[Instruction]
    ) -> None:
        step = self.TRANSITIONS.get((lt.status, new))
        if step is None:
            raise ConflictError(f"task cannot go from {lt.status.value} to {new.value}")
        step(self, lt, new, now, change, out)

    def _to_running(
        self, lt: LiveTask, new: TaskStatus, now: float, change: _Change, out: list[Instruction]
    ) -> None:
        lt.status = R
        lt.attempts += 1
        lt.started_at = now
        lt.executor = change["executor"]
        self.started_total += 1
        timeout = lt.spec.timeout_s or self.default_timeout_s
        if timeout:
            lt.deadline = now + timeout
            self._add_timer(lt.deadline, TimerKind.DEADLINE, lt.id)

    def _to_retry(
        self, lt: LiveTask, new: TaskStatus, now: float, change: _Change, out: list[Instruction]
    ) -> None:
        outcome: Outcome = change["outcome"]
        delay = min(self.retry_max_s, self.retry_base_s * (2 ** (lt.attempts - 1)))
        lt.status = Q
        lt.error = outcome.error
        lt.executor = None
        lt.handle = None
        out.append(Requeue(lt, delay, outcome.error, now))
        self._add_timer(now + delay, TimerKind.RETRY, lt.id)

    def _to_terminal(
        self, lt: LiveTask, new: TaskStatus, now: float, change: _Change, out: list[Instruction]
    ) -> None:
        old = lt.status
        outcome: Outcome | None = change.get("outcome")
        lt.status = new
        lt.finished_at = now
        lt.error = change.get("error")
        lt.result = outcome.result if outcome is not None and change.get("has_result") else None
        if not lt.zombie:
            self.tasks.pop(lt.id, None)
        out.append(
            Finish(
                lt,
                old,
                result=lt.result,
                has_result=bool(change.get("has_result")),
                artifacts=outcome.artifacts if outcome is not None else None,
            )
        )

    # -- timers ------------------------------------------------------------------------------

    def _add_timer(self, at: float, kind: TimerKind, task_id: str) -> None:
        self._timer_n += 1
        heapq.heappush(self.timers, Timer(at, self._timer_n, kind, task_id))

    def _drop_timers(self, task_id: str) -> None:
        if any(t.task_id == task_id for t in self.timers):
            self.timers = [t for t in self.timers if t.task_id != task_id]
            heapq.heapify(self.timers)

    def _fire_timers(self, now: float, out: list[Instruction]) -> None:
        timers = self.timers
        while timers and timers[0].at <= now:
            timer = heapq.heappop(timers)
            lt = self.tasks.get(timer.task_id)
            if lt is None:
                continue
            kind = timer.kind
            if kind is TimerKind.RETRY:
                if lt.status is Q and lt.id not in self._lane(lt):
                    self._enqueue(lt)
            elif kind is TimerKind.DEADLINE:
                if lt.status is R and lt.deadline and lt.deadline <= now:
                    self._stop(lt, StopSignal.TIMEOUT, StopSignal.TIMEOUT, out)
                    self._add_timer(now + FORCE_TIMEOUT_GRACE_S, TimerKind.FORCE_TIMEOUT, lt.id)
            elif kind is TimerKind.FORCE_TIMEOUT:
                if lt.status is R:
                    # The handler ignored cancellation: the task fails now; its slot stays
                    # held until its job really ends (honest accounting).
                    lt.zombie = True
                    error = {"code": "timeout", "message": "task exceeded its timeout"}
                    self._transition(lt, F, now, {"error": error}, out)
            # TimerKind.BATCH only wakes the dispatcher: the pass that follows looks again.

    # -- placement ---------------------------------------------------------------------------

    def _lane(self, lt: LiveTask) -> AgingPriorityQueue[LiveTask]:
        return self.jobs if lt.durable else self.online

    def _enqueue(self, lt: LiveTask) -> None:
        self._lane(lt).push(lt.id, lt.spec.priority, lt.shape, lt, lt.created_at)
        if lt.task_type.batch_handler is not None:
            self.batches.add(lt)

    def _unqueue(self, lt: LiveTask) -> None:
        """Take a queued task out of its lane and batch group (no-op if not there)."""
        self._lane(lt).remove(lt.id)
        if lt.task_type.batch_handler is not None:
            self.batches.discard(lt)

    def _rank(self, lt: LiveTask) -> float:
        return lt.created_at - lt.spec.priority * self.aging_s

    def _lanes(self) -> Iterator[tuple[AgingPriorityQueue[LiveTask], float]]:
        """Each lane with the CPU it may use beyond capacity: online first, then jobs."""
        yield self.online, self.online_reserve_cpu
        yield self.jobs, 0.0

    def _dispatch(self, now: float, out: list[Instruction]) -> None:
        if self.paused:
            return
        for lane, extra_cpu in self._lanes():
            if len(lane):
                self._dispatch_lane(lane, extra_cpu, now, out)

    def _dispatch_lane(
        self,
        lane: AgingPriorityQueue[LiveTask],
        extra_cpu: float,
        now: float,
        out: list[Instruction],
    ) -> None:
        pool = self.pool
        held: list[QueueEntry[LiveTask]] = []
        starts: dict[str, list[LiveTask]] = {}

        def fits(shape: Shape) -> bool:
            return pool.place(shape, extra_cpu) is not None

        while len(lane):
            entry = lane.pop_fitting(fits, now)
            if entry is None:
                break
            lt = entry.item
            name = pool.place(lt.shape, extra_cpu)
            assert name is not None
            if lt.task_type.batch_handler is None:
                pool.acquire(name, lt.shape)
                starts.setdefault(name, []).append(lt)
                continue
            max_size, max_wait = self.batch_policy(lt.spec.task_type, lt.spec.model)
            if self.batches.size(lt) < max_size and now - lt.created_at < max_wait:
                held.append(entry)  # let the batch fill, at most max_wait after its head
                continue
            members = [lt, *self.batches.best(lt, max_size - 1, self._rank)]
            for m in members:
                self.batches.discard(m)
                if m is not lt:
                    self._lane(m).remove(m.id)
            pool.acquire(name, lt.shape)
            run = BatchRun(name, lt.shape, len(members), [m.id for m in members])
            for m in members:
                m.batch = run
            self._start(members, name, now, True, out)
        for name, group in starts.items():
            self._start(group, name, now, False, out)
        for entry in held:
            lane.push(entry.task_id, entry.priority, entry.shape, entry.item, entry.enqueued_at)
            _, max_wait = self.batch_policy(entry.item.spec.task_type, entry.item.spec.model)
            self._add_timer(entry.item.created_at + max_wait, TimerKind.BATCH, entry.task_id)

    def _start(
        self,
        members: list[LiveTask],
        executor: str,
        now: float,
        batch: bool,
        out: list[Instruction],
    ) -> None:
        change = {"executor": executor}
        for lt in members:
            self._transition(lt, R, now, change, out)
        out.append(Start(executor, tuple(members), batch))

    def _stop(self, lt: LiveTask, reason: str, signal: StopSignal, out: list[Instruction]) -> None:
        lt.cancel_requested = reason
        out.append(Stop(lt, signal))

    def _release(self, lt: LiveTask) -> None:
        batch = lt.batch
        if batch is not None:
            lt.batch = None
            batch.remaining -= 1
            if batch.remaining == 0:  # the whole batch shared one allocation
                self.pool.release(batch.executor, batch.shape)
        elif lt.executor:
            self.pool.release(lt.executor, lt.shape)

    def _forget(self, lt: LiveTask) -> None:
        self._drop_timers(lt.id)
        if self.tasks.get(lt.id) is lt:
            del self.tasks[lt.id]


SchedulerCore.TRANSITIONS = {
    (Q, R): SchedulerCore._to_running,  # placed on an executor
    (Q, C): SchedulerCore._to_terminal,  # cancelled while waiting
    (Q, F): SchedulerCore._to_terminal,  # could never fit / expired while queued
    (R, S): SchedulerCore._to_terminal,
    (R, F): SchedulerCore._to_terminal,  # handler error, timeout, retries spent
    (R, Q): SchedulerCore._to_retry,  # retry after a retryable failure
    (R, C): SchedulerCore._to_terminal,  # cancelled while running
}
TRANSITIONS = SchedulerCore.TRANSITIONS

_HANDLERS: dict[type[Any], Callable[[SchedulerCore, Any, float, list[Instruction]], None]] = {
    TaskArrived: SchedulerCore._on_arrived,
    TaskRecovered: SchedulerCore._on_recovered,
    JobEnded: SchedulerCore._on_job_ended,
    CancelRequested: SchedulerCore._on_cancel,
    TakenOver: SchedulerCore._on_taken_over,
    TasksLost: SchedulerCore._on_lost,
}
