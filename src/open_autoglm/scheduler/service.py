"""The Scheduler: admission, priority dispatch with aging, placement, deadlines, retries.

A single lock guards the in-memory state; one dispatcher thread starts work and fires
timers; executor callbacks (``done``/``event``) finish work. Every state change is written
through the storage hub's group-commit writer. A task is pushed into the queue only after
its row is committed, so nothing runs that a crash could forget.
"""

from __future__ import annotations

import functools
import heapq
import logging
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Protocol

from open_autoglm.errors import (
    AdmissionError,
    ConflictError,
    NotFoundError,
    TaskTakenOverError,
    ValidationError,
)
from open_autoglm.futures import Promise
from open_autoglm.scheduler.batching import DEFAULT_POLICY, BatchGroups, BatchPolicy, BatchRun
from open_autoglm.scheduler.live_task import LiveTask
from open_autoglm.scheduler.priority_queue import AgingPriorityQueue
from open_autoglm.scheduler.recovery import recover
from open_autoglm.scheduler.resources import Capacity, ResourcePool
from open_autoglm.scheduler.transitions import check_transition
from open_autoglm.spec.task import TaskSpec, TaskStatus
from open_autoglm.storage.writer import FENCED
from open_autoglm.tasks.base import TaskType

__all__ = ["Scheduler", "SchedulerObserver", "StorageLike"]

log = logging.getLogger(__name__)

_FORCE_TIMEOUT_GRACE_S = 2.0
# A terminal write, its task, its result and the transition to report once it is stored
# (None: reported already).
_Finished = tuple[Any, LiveTask, Any, tuple[TaskStatus | None, TaskStatus, float] | None]


class StorageLike(Protocol):
    def write(self, w: Any, *, lazy: bool = False) -> Future[Any]: ...

    def write_many(self, writes: list[Any], *, lazy: bool = False) -> Future[list[Any]]: ...

    def get_task(self, task_id: str) -> dict[str, Any]: ...


class SchedulerObserver(Protocol):
    """Receives what metrics and event streams need; all calls are cheap and non-blocking.

    ``on_transition`` is always called with the scheduler's lock held, so calls never
    overlap; ``on_event`` comes from executor threads.
    """

    def on_transition(
        self, task: LiveTask, old: TaskStatus | None, new: TaskStatus, now: float
    ) -> None: ...

    def on_event(self, task_id: str, kind: str, data: dict[str, Any]) -> None: ...


class Scheduler:
    def __init__(
        self,
        storage: StorageLike,
        *,
        resolve_type: Callable[[str], TaskType],
        make_job: Callable[[LiveTask], Any],
        max_queued: int = 100_000,
        aging_s: float = 30.0,
        retry_base_s: float = 0.5,
        retry_max_s: float = 60.0,
        default_timeout_s: float | None = None,
        clock: Callable[[], float] = time.time,
        observer: SchedulerObserver | None = None,
        task_write: Callable[..., Any],
        owner: str | None = None,
        claim: Callable[[], list[dict[str, Any]]],
    ) -> None:
        self._storage = storage
        # The replica this scheduler runs for (stored on every task it accepts), and how it
        # claims the queued/running tasks it must recover (those no live replica owns).
        self.owner = owner
        self._claim = claim
        self._resolve_type = resolve_type
        self._make_job = make_job
        # The TaskWrite constructor; every write names this replica, so storage drops the
        # late writes of a replica whose tasks were taken over (storage/writer.py: fencing).
        # An online task's row is stored only when it ends (never taken over): its events
        # before that go unfenced.
        self._write = functools.partial(task_write, owner=owner) if owner else task_write
        self._write_online = task_write
        self.max_queued = max_queued
        self.retry_base_s = retry_base_s
        self.retry_max_s = retry_max_s
        self.default_timeout_s = default_timeout_s
        self._clock = clock
        self._observer = observer
        # The dispatcher thread owns the queue, the pool and the timers; it holds ``_lock``
        # while it works. Other threads post to ``_inbox`` (accepted tasks, finished jobs)
        # and wake it through ``_cv``, whose lock is never held for long: posting costs a
        # deque append, and a pass handles everything posted since the last one.
        self._lock = threading.Lock()
        self._inbox: deque[tuple[Any, ...]] = deque()
        self._cv = threading.Condition(threading.Lock())
        self._sleeping = False
        self._kicked = False
        self.queue: AgingPriorityQueue[LiveTask] = AgingPriorityQueue(
            aging_s=aging_s, reserve_after_s=max(aging_s, 1.0)
        )
        self.pool = ResourcePool()
        self._executors: dict[str, Any] = {}
        self.live: dict[str, LiveTask] = {}
        self._keys: dict[str, str] = {}
        self._timers: list[tuple[float, int, str, str]] = []  # (at, n, kind, task_id)
        self._timer_n = 0
        self._running = False
        self._paused = False  # draining: start nothing more, finish what runs
        self._thread: threading.Thread | None = None
        self.started_total = 0
        self._since = time.monotonic()  # for the start-rate behind Retry-After
        self.batches = BatchGroups()
        self.batch_policy: BatchPolicy = lambda task_type, model: DEFAULT_POLICY

    # -- lifecycle ---------------------------------------------------------------------------

    def add_executor(self, executor: Any) -> None:
        self._executors[executor.name] = executor
        cap: Capacity = executor.capacity
        self.pool.add(executor.name, cap)

    def start(self) -> None:
        self.recover()
        self._running = True
        self._thread = threading.Thread(
            target=self._dispatch_loop, name="autoglm-scheduler", daemon=True
        )
        self._thread.start()

    def pause(self) -> list[str]:
        """Start nothing more (a draining server); queued durable tasks stay queued for the
        next start, queued online ones (their clients wait on this server) are cancelled.
        Returns the ids of those cancelled."""
        with self._lock:
            self._paused = True
            online = [
                lt.id
                for lt in self.live.values()
                if not lt.durable and lt.status is TaskStatus.QUEUED
            ]
        for task_id in online:
            self.cancel(task_id, "the server is shutting down")
        return online

    def stop(self) -> None:
        with self._lock:
            self._running = False
        self._kick()
        if self._thread:
            self._thread.join(timeout=5)

    def recover(self) -> dict[str, int]:
        """Claim and re-queue tasks a dead process left queued or running (at-least-once).

        Called at start, and by the runtime whenever another replica's lease lapses.
        """
        return recover(
            self._storage,
            self._claim(),
            write=self._write,
            resolve_type=self._resolve_type,
            shape=_shape,
            adopt=self.adopt,
            now=self._clock(),
        )

    def adopt(self, lt: LiveTask) -> None:
        """Take a recovered task back into the queue."""
        with self._lock:
            self.live[lt.id] = lt
            if lt.spec.idempotency_key:
                self._keys[lt.spec.idempotency_key] = lt.id
            self._enqueue(lt, lt.created_at)

    # -- submission --------------------------------------------------------------------------

    def prepare(self, spec: TaskSpec) -> tuple[TaskType, Any]:
        """Resolve the task type and validate params; raises ValidationError."""
        try:
            ttype = self._resolve_type(spec.task_type)
        except NotFoundError as exc:
            raise ValidationError(
                exc.message, details=[{"loc": ["task_type"], "msg": exc.message}]
            ) from None
        from pydantic import ValidationError as PydanticError

        from open_autoglm.spec.task import pydantic_details, summarize

        try:
            params = ttype.params_model.model_validate(spec.params)
        except PydanticError as exc:
            details = pydantic_details(exc, ("params",))
            raise ValidationError(
                f"invalid params for {spec.task_type}: {summarize(details)}", details=details
            ) from None
        problems = []
        if ttype.requires_model and not spec.model:
            problems.append(
                {"loc": ["model"], "msg": f"task type {spec.task_type!r} needs a model"}
            )
        if ttype.requires_input and spec.payload() is None:
            problems.append(
                {"loc": ["input"], "msg": f"task type {spec.task_type!r} needs an input"}
            )
        shape = _shape(spec, ttype, params)
        if self.pool and not self.pool.could_ever_fit(shape):
            want = {"cpu": shape[0], "memory_mb": shape[1], "gpu": shape[2]}
            problems.append({"loc": ["resources"], "msg": f"no executor can ever fit {want}"})
        if problems:
            raise ValidationError("invalid task spec: " + summarize(problems), details=problems)
        return ttype, params

    def submit(
        self,
        spec: TaskSpec,
        *,
        events: list[tuple[float, str, Any]] | None = None,
        durable: bool = True,
    ) -> Future[tuple[dict[str, Any], bool]]:
        """Accept a task. The future resolves to ``(task, created)`` once the row is committed.

        ``created`` is False when an idempotency key matched an existing task. With
        ``durable=False`` (online inference) the task is queued at once and its row is
        written off the hot path; it is never replayed after a crash.
        """
        ttype, params = self.prepare(spec)
        key = spec.idempotency_key
        # Lock-free reads: the database decides duplicates; this is the fast path for keys
        # still in memory, and the queue bound is advisory by nature.
        if key and (tid := self._keys.get(key)) and (existing := self.live.get(tid)) is not None:
            return Promise.resolved((existing.as_dict(), False))
        self.check_room(1)
        now = self._clock()
        tid = _new_id()
        lt = LiveTask(
            id=tid,
            spec=spec,
            task_type=ttype,
            params=params,
            status=TaskStatus.QUEUED,
            attempts=0,
            created_at=now,
            shape=_shape(spec, ttype, params),
            durable=durable,
        )
        row = {
            "id": tid,
            "task_type": spec.task_type,
            "model": spec.model,
            "status": "queued",
            "priority": spec.priority,
            "spec": spec.model_dump(mode="json"),
            "idempotency_key": key,
            "attempts": 0,
            "max_retries": spec.max_retries,
            "created_at": now,
            "durable": durable,
            "owner": self.owner,
        }
        evs = [(now, "status", {"status": "queued"}), *(events or [])]
        if not durable:
            # Online inference is a log entry, not a promise: it is never replayed, so its
            # row and status events are stored once, when it ends (one write, not three).
            lt.pending_row, lt.pending_events = row, evs
            self._accept(lt)
            return Promise.resolved((lt.as_dict(), True))
        written = self._storage.write(self._write(task_id=tid, row=row, events=evs))
        out: Promise[tuple[dict[str, Any], bool]] = Promise()

        def committed(f: Future[Any]) -> None:
            try:
                existing_id, created = f.result()
            except BaseException as exc:
                out.set_exception(exc)
                return
            if not created:
                try:
                    out.set_result((self._storage.get_task(existing_id), False))
                except BaseException as exc:
                    out.set_exception(exc)
                return
            self._accept(lt)
            out.set_result((lt.as_dict(), True))

        written.add_done_callback(committed)
        return out

    def _accept(self, lt: LiveTask) -> None:
        """A stored (or online) task becomes visible now and is queued by the next pass."""
        self.live[lt.id] = lt  # single dict stores are atomic; readers copy before iterating
        if lt.spec.idempotency_key:
            self._keys[lt.spec.idempotency_key] = lt.id
        self._post(("queue", lt))

    def _post(self, message: tuple[Any, ...]) -> None:
        self._inbox.append(message)
        # The dispatcher sets ``_sleeping`` under ``_cv`` and then re-checks the inbox, so
        # a message appended before this read is seen either way.
        if self._sleeping:
            with self._cv:
                self._cv.notify()

    def _kick(self) -> None:
        """Wake the dispatcher for something that is not in the inbox (capacity, stop)."""
        with self._cv:
            self._kicked = True
            self._cv.notify()

    def check_room(self, n: int) -> None:
        """Raise AdmissionError unless ``n`` more tasks fit under ``max_queued`` now."""
        waiting = len(self.queue) + len(self._inbox)
        if waiting + n > self.max_queued:
            raise AdmissionError(
                f"queue is full ({waiting} of {self.max_queued} waiting): "
                f"{n} task{'s' if n != 1 else ''} do{'es' if n == 1 else ''} not fit",
                retry_after=self._retry_after(),
            )

    def _retry_after(self) -> float:
        rate = max(1.0, self.started_total / max(1.0, time.monotonic() - self._since))
        return max(1.0, round(len(self.queue) / rate, 1))

    # -- cancellation ------------------------------------------------------------------------

    def cancel(self, task_id: str, reason: str = "cancelled by request") -> dict[str, Any]:
        with self._lock:
            lt = self.live.get(task_id)
            if lt is None or lt.status.terminal:
                pass
            elif lt.status is TaskStatus.QUEUED:
                self._unqueue_locked(lt)
                self._drop_timer_task(task_id)
                self._finish_locked(
                    lt, TaskStatus.CANCELLED, error={"code": "cancelled", "message": reason}
                )
                return lt.as_dict()
            else:
                self._stop_locked(lt, reason)
                return lt.as_dict()
        row = self._storage.get_task(task_id)
        raise ConflictError(f"task {task_id} is already {row['status']}")

    def _unqueue_locked(self, lt: LiveTask) -> None:
        """Take a queued task out of the queue and its batch group (no-op if not there)."""
        self.queue.remove(lt.id)
        if lt.task_type.batch_handler is not None:
            self.batches.discard(lt)

    def _stop_locked(self, lt: LiveTask, reason: str) -> None:
        """Ask a running task's executor to stop it; its outcome then finishes it."""
        lt.cancel_requested = reason
        if lt.handle is not None:
            lt.handle.cancel("cancelled")

    def _forget_locked(self, lt: LiveTask) -> None:
        """``lt`` leaves the in-memory view: its record in storage is the one to read now."""
        if self.live.get(lt.id) is lt:
            del self.live[lt.id]
        key = lt.spec.idempotency_key
        if key and self._keys.get(key) == lt.id:
            del self._keys[key]

    def _drop_timer_task(self, task_id: str) -> None:
        self._timers = [t for t in self._timers if t[3] != task_id]
        heapq.heapify(self._timers)

    # -- dispatch ----------------------------------------------------------------------------

    def _dispatch_loop(self) -> None:
        while True:
            answered: list[tuple[LiveTask, Any]] = []
            with self._lock:
                if not self._running:
                    return
                now = self._clock()
                self._drain_inbox(now, answered)
                self._fire_timers(now)
                if not self._paused:
                    self._dispatch(now)
                timeout = 1.0
                if self._timers:
                    timeout = max(0.0, min(timeout, self._timers[0][0] - self._clock()))
            for lt, result in answered:  # outside the lock: callbacks may call back in
                lt.done.set_result({**lt.as_dict(), "result": result})
            with self._cv:
                if self._inbox or self._kicked:
                    self._kicked = False
                    continue
                self._sleeping = True
                if not self._inbox:
                    self._cv.wait(timeout)
                self._sleeping = False
                self._kicked = False

    def _drain_inbox(self, now: float, answered: list[tuple[LiveTask, Any]]) -> None:
        finished: list[_Finished] = []
        inbox = self._inbox
        while inbox:
            msg = inbox.popleft()
            if msg[0] == "queue":
                task: LiveTask = msg[1]
                if task.status is TaskStatus.QUEUED and self.live.get(task.id) is task:
                    self._observe(task, None, TaskStatus.QUEUED, task.created_at)
                    self._enqueue(task, task.created_at)  # not cancelled meanwhile
            else:
                self._complete_locked(msg[1], msg[2], finished)
        if finished:
            self._flush_finished(finished, answered)

    def _enqueue(self, lt: LiveTask, at: float) -> None:
        self.queue.push(lt.id, lt.spec.priority, lt.shape, lt, at)
        if lt.task_type.batch_handler is not None:
            self.batches.add(lt)

    def _rank(self, lt: LiveTask) -> float:
        return lt.created_at - lt.spec.priority * self.queue.aging_s

    def _dispatch(self, now: float) -> None:
        pool = self.pool
        held: list[Any] = []
        starts: dict[str, list[LiveTask]] = {}
        while len(self.queue):
            entry = self.queue.pop_fitting(lambda s: pool.place(s) is not None, now)
            if entry is None:
                break
            lt = entry.item
            name = pool.place(lt.shape)
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
                    self.queue.remove(m.id)
            pool.acquire(name, lt.shape)
            run = BatchRun(name, lt.shape, len(members), [m.id for m in members])
            for m in members:
                m.batch = run
            self._start_locked(members, name, now, batch=True)
        for name, group in starts.items():
            self._start_locked(group, name, now, batch=False)
        for entry in held:
            self.queue.push(
                entry.task_id, entry.priority, entry.shape, entry.item, entry.enqueued_at
            )
            _, max_wait = self.batch_policy(entry.item.spec.task_type, entry.item.spec.model)
            self._add_timer(entry.item.created_at + max_wait, "batch", entry.task_id)

    def _start_locked(
        self, members: list[LiveTask], executor: str, now: float, *, batch: bool
    ) -> None:
        """Mark ``members`` running (one grouped write) and hand them to the executor.

        A durable task's handler starts only once its "running" state is committed: after a
        crash, a task the database calls queued has never had side effects. Online tasks are
        never replayed, so they start at once. A batch starts when all its members may.
        """
        marked = [(lt, self._mark_running_locked(lt, executor, now)) for lt in members]
        writes = [w for _, w in marked if w is not None]
        written = [lt for lt, w in marked if w is not None]
        runner = self._executors[executor]

        def launch(group: list[LiveTask]) -> None:
            jobs = [self._make_job(lt) for lt in group]
            if batch:
                handles = runner.submit_batch(jobs, self)
            else:
                handles = runner.submit_many(jobs, self)
            for lt, handle in zip(group, handles, strict=True):
                lt.handle = handle
                if lt.cancel_requested:
                    handle.cancel(lt.cancel_requested)

        if batch:
            waiting, now_ok = (members, []) if any(m.durable for m in members) else ([], members)
        else:
            waiting = [m for m in members if m.durable]
            now_ok = [m for m in members if not m.durable] if waiting else members
        if now_ok:
            launch(now_ok)
        if waiting:
            recorded = self._storage.write_many(writes)

            def committed(f: Future[Any]) -> None:
                if f.exception() is not None:
                    log.error(
                        "could not record the start of %d tasks: %s", len(waiting), f.exception()
                    )
                    launch(waiting)
                    return
                lost = {lt.id for lt, o in zip(written, f.result(), strict=True) if o == FENCED}
                if lost:  # taken over while we stalled: the new owner runs them, not us
                    self._lose([lt for lt in waiting if lt.id in lost])
                keep = [lt for lt in waiting if lt.id not in lost]
                if keep:
                    launch(keep)

            recorded.add_done_callback(committed)

    def _mark_running_locked(self, lt: LiveTask, executor: str, now: float) -> Any:
        """Move ``lt`` to running in memory; returns the write that records it (None for an
        online task, whose whole record is written when it ends)."""
        check_transition(lt.status, TaskStatus.RUNNING)
        lt.status = TaskStatus.RUNNING
        lt.attempts += 1
        lt.started_at = now
        lt.executor = executor
        self.started_total += 1
        timeout = lt.spec.timeout_s or self.default_timeout_s
        if timeout:
            lt.deadline = now + timeout
            self._add_timer(lt.deadline, "deadline", lt.id)
        self._observe(lt, TaskStatus.QUEUED, TaskStatus.RUNNING, now)
        event = (now, "status", {"status": "running", "attempt": lt.attempts, "executor": executor})
        if lt.pending_events is not None:  # online: stored when it ends
            lt.pending_events.append(event)
            return None
        return self._write(
            task_id=lt.id,
            fields={"status": "running", "started_at": now, "attempts": lt.attempts},
            events=[event],
        )

    def _add_timer(self, at: float, kind: str, task_id: str) -> None:
        self._timer_n += 1
        heapq.heappush(self._timers, (at, self._timer_n, kind, task_id))

    def _fire_timers(self, now: float) -> None:
        while self._timers and self._timers[0][0] <= now:
            _, _, kind, tid = heapq.heappop(self._timers)
            lt = self.live.get(tid)
            if lt is None:
                continue
            if kind == "retry" and lt.status is TaskStatus.QUEUED and tid not in self.queue:
                self._enqueue(lt, lt.created_at)
            elif (
                kind == "deadline"
                and lt.status is TaskStatus.RUNNING
                and lt.deadline
                and lt.deadline <= now
            ):
                lt.cancel_requested = "timeout"
                if lt.handle is not None:
                    lt.handle.cancel("timeout")
                self._add_timer(now + _FORCE_TIMEOUT_GRACE_S, "force_timeout", tid)
            elif kind == "force_timeout" and lt.status is TaskStatus.RUNNING:
                # The handler ignored cancellation: the task fails now; its slot stays held
                # until the thread really ends (honest accounting).
                lt.zombie = True
                self._finish_locked(
                    lt,
                    TaskStatus.FAILED,
                    error={"code": "timeout", "message": "task exceeded its timeout"},
                )

    # -- executor callbacks (ResultSink) -----------------------------------------------------

    def event(self, task_id: str, kind: str, data: dict[str, Any]) -> None:
        now = self._clock()
        lt = self.live.get(task_id)
        if lt is not None and kind == "progress":
            lt.progress = data
        online = lt is not None and not lt.durable
        write = self._write_online if online else self._write
        self._storage.write(write(task_id=task_id, events=[(now, kind, data)]), lazy=online)
        if self._observer is not None:
            self._observer.on_event(task_id, kind, data)

    def done(self, task_id: str, outcome: Any) -> None:
        """The executor's report that a job ended; handled by the dispatcher's next pass."""
        self._post(("done", task_id, outcome))

    def _complete_locked(self, task_id: str, outcome: Any, finished: list[_Finished]) -> None:
        from open_autoglm.executors.base import OutcomeStatus

        lt = self.live.get(task_id)
        if lt is None:
            return
        self._release_locked(lt)
        if lt.zombie or lt.status is not TaskStatus.RUNNING:
            return
        now = self._clock()
        lt.deadline = None
        status = outcome.status
        if status is OutcomeStatus.SUCCEEDED:
            self._finish_locked(
                lt,
                TaskStatus.SUCCEEDED,
                result=outcome.result,
                has_result=True,
                artifacts=outcome.artifacts,
                into=finished,
            )
        elif status is OutcomeStatus.CANCELLED or (
            lt.cancel_requested and lt.cancel_requested != "timeout"
        ):
            self._finish_locked(
                lt,
                TaskStatus.CANCELLED,
                error={"code": "cancelled", "message": lt.cancel_requested or "cancelled"},
                artifacts=outcome.artifacts,
                into=finished,
            )
        elif outcome.retryable and lt.attempts <= lt.spec.max_retries:
            delay = min(self.retry_max_s, self.retry_base_s * (2 ** (lt.attempts - 1)))
            check_transition(lt.status, TaskStatus.QUEUED)
            lt.status = TaskStatus.QUEUED
            lt.error = outcome.error
            lt.executor = None
            lt.handle = None
            event = (
                now,
                "status",
                {
                    "status": "queued",
                    "reason": "retry",
                    "retry_in_s": delay,
                    "error": outcome.error,
                },
            )
            if lt.pending_events is not None:
                lt.pending_events.append(event)
            else:
                self._storage.write(
                    self._write(
                        task_id=lt.id,
                        fields={"status": "queued", "error": outcome.error},
                        events=[event],
                    )
                )
            self._observe(lt, TaskStatus.RUNNING, TaskStatus.QUEUED, now)
            self._add_timer(now + delay, "retry", lt.id)
        else:
            # Whether it could have been retried travels with the error, so callers that
            # retry on their own (workflow steps) follow the handler's verdict, not a guess.
            error = {**(outcome.error or {}), "retryable": bool(outcome.retryable)}
            self._finish_locked(
                lt, TaskStatus.FAILED, error=error, artifacts=outcome.artifacts, into=finished
            )

    def _release_locked(self, lt: LiveTask) -> None:
        batch = lt.batch
        if batch is not None:
            lt.batch = None
            batch.remaining -= 1
            if batch.remaining == 0:  # the whole batch shared one allocation
                self.pool.release(batch.executor, batch.shape)
        elif lt.executor:
            self.pool.release(lt.executor, lt.shape)

    def _finish_locked(
        self,
        lt: LiveTask,
        status: TaskStatus,
        *,
        result: Any = None,
        has_result: bool = False,
        error: dict[str, Any] | None = None,
        artifacts: list[dict[str, Any]] | None = None,
        into: list[_Finished] | None = None,
    ) -> None:
        """Move ``lt`` to a terminal state; its write goes into ``into`` (flushed by the
        caller with the rest of the pass) or straight to storage."""
        check_transition(lt.status, status)
        old = lt.status
        now = self._clock()
        lt.status = status
        lt.finished_at = now
        lt.error = error
        lt.result = result
        data: dict[str, Any] = {"status": status.value}
        if error:
            data["error"] = error
        if artifacts:
            data["artifacts"] = [a.get("id") for a in artifacts]
        fields: dict[str, Any] = {"status": status.value, "finished_at": now, "error": error}
        events = [(now, "status", data)]
        row = lt.pending_row
        if row is not None:  # online: the first and only write of its record
            assert lt.pending_events is not None
            fields.update(started_at=lt.started_at, attempts=lt.attempts)
            events = [*lt.pending_events, *events]
            lt.pending_row = lt.pending_events = None
        write = self._write(
            task_id=lt.id,
            row=row,
            fields=fields,
            terminal=True,
            events=events,
            result=result,
            has_result=has_result,
        )
        # A durable task's end counts once it is stored as this replica's: a replica that
        # lost its lease must not report a success whose write was fenced.
        seen = (old, status, now) if lt.durable else None
        if seen is None:
            self._observe(lt, old, status, now)
        if into is not None:
            into.append((write, lt, result, seen))
        else:
            self._flush_finished([(write, lt, result, seen)])

    def _flush_finished(
        self,
        finished: list[_Finished],
        answered: list[tuple[LiveTask, Any]] | None = None,
    ) -> None:
        """Store the terminal writes of one pass together; then the tasks leave ``live``
        and their ``done`` futures resolve (a waiter never sees a state not yet stored).

        Online tasks given ``answered`` go there instead, for the caller to resolve at once:
        their record is a log entry, not a promise, so the answer does not wait for the
        commit. They stay in ``live`` until it is stored, so a read by id finds them all along.
        """
        # Only answered online tasks in the pass: a log write, which may wait for company.
        lazy = answered is not None and all(
            not lt.durable and lt.status is TaskStatus.SUCCEEDED for _, lt, _, _ in finished
        )
        committed = self._storage.write_many([w for w, _, _, _ in finished], lazy=lazy)
        early: set[str] = set()
        if answered is not None:
            for _, lt, result, _ in finished:
                if not lt.durable and lt.status is TaskStatus.SUCCEEDED:
                    answered.append((lt, result))
                    early.add(lt.id)
                    lt.logged = committed

        def stored(f: Future[Any]) -> None:
            exc = f.exception()
            outcomes = f.result() if exc is None else [None] * len(finished)
            with self._lock:
                for (_, lt, _, seen), outcome in zip(finished, outcomes, strict=True):
                    if seen is not None and outcome != FENCED:
                        self._observe(lt, *seen)
                    self._forget_locked(lt)
            for (_, lt, result, _), outcome in zip(finished, outcomes, strict=True):
                if lt.id in early:
                    if exc is not None:
                        log.error("online task %s answered but not logged: %s", lt.id, exc)
                elif exc is not None:
                    lt.done.set_exception(exc)
                elif outcome == FENCED:
                    lt.done.set_exception(_taken_over(lt))
                else:
                    lt.done.set_result({**lt.as_dict(), "result": result})

        committed.add_done_callback(stored)

    def durable_ids(self) -> list[str]:
        """Ids of the stored (durable) tasks this scheduler holds, queued or running."""
        return [lt.id for lt in list(self.live.values()) if lt.durable and not lt.status.terminal]

    def abandon(self, task_ids: set[str]) -> int:
        """Stop acting on tasks another replica took over while this one stalled: queued
        ones are dropped, running ones asked to stop (whatever they write is fenced)."""
        dropped: list[LiveTask] = []
        stopping = 0
        with self._lock:
            for tid in task_ids:
                lt = self.live.get(tid)
                if lt is None or not lt.durable or lt.status.terminal:
                    continue
                if lt.status is TaskStatus.QUEUED:
                    self._unqueue_locked(lt)
                    dropped.append(lt)
                else:
                    self._stop_locked(lt, "taken over by another replica")
                    stopping += 1
        if dropped:
            self._lose(dropped)
        return len(dropped) + stopping

    def _lose(self, lost: list[LiveTask]) -> None:
        """Forget tasks another replica owns now (this one missed its lease): their start
        could not be recorded, or they were still queued here; their waiters learn so."""
        with self._lock:
            for lt in lost:
                self._release_locked(lt)
                self._drop_timer_task(lt.id)
                self._forget_locked(lt)
        for lt in lost:
            log.warning("task %s was taken over by another replica; not running it here", lt.id)
            lt.done.set_exception(_taken_over(lt))

    def _observe(self, lt: LiveTask, old: TaskStatus | None, new: TaskStatus, now: float) -> None:
        if self._observer is not None:
            self._observer.on_transition(lt, old, new, now)

    # -- reads -------------------------------------------------------------------------------

    def live_task(self, task_id: str) -> LiveTask | None:
        return self.live.get(task_id)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            running = sum(1 for t in list(self.live.values()) if t.status is TaskStatus.RUNNING)
            return {
                "queued": len(self.queue),
                "running": running,
                "queue_by_priority": self.queue.depth_by_priority(),
                "utilization": self.pool.utilization(),
                "max_queued": self.max_queued,
            }


def _taken_over(lt: LiveTask) -> TaskTakenOverError:
    return TaskTakenOverError(
        f"task {lt.id} was taken over by another server after this one missed its lease; "
        "read it again for the state that counts"
    )


_ID_LOCK = threading.Lock()
_ID_POOL: list[bytes] = []


def _new_id() -> str:
    """A random (version 4) UUID as 32 hex digits, like ``uuid.uuid4().hex``.

    The random bytes come from ``os.urandom`` 256 ids at a time: one system call per id
    released the GIL on every submission, and winning it back under load cost more than
    everything else ``submit`` does.
    """
    with _ID_LOCK:
        if not _ID_POOL:
            raw = os.urandom(16 * 256)
            _ID_POOL.extend(raw[i : i + 16] for i in range(0, len(raw), 16))
        b = _ID_POOL.pop()
    return uuid.UUID(bytes=b, version=4).hex


def _shape(spec: TaskSpec, ttype: TaskType, params: Any) -> tuple[float, int, int]:
    """The (cpu, memory_mb, gpu) a task asks for: its spec's, else what its type derives from
    its params, else its type's default."""
    if spec.resources is not None:
        r = spec.resources
        return (r.cpu, r.memory_mb, r.gpu)
    d = ttype.resources_for(params) if ttype.resources_for else ttype.default_resources
    return (float(d.get("cpu", 1.0)), int(d.get("memory_mb", 0)), int(d.get("gpu", 0)))
