"""The Scheduler: the thin adapter around the pure core (:mod:`.core`).

The core decides (queue, placement, batching, deadlines, retries); this adapter owns what
the core must not touch: the dispatcher thread and its lock, the clock, storage writes,
executors and the futures callers wait on. It feeds the core typed events with the time read
from the injected clock and carries out the instructions it gets back. Every state change is
written through the storage hub's group-commit writer. A task is queued only after its row is
committed, so nothing runs that a crash could forget.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from open_autoglm.errors import (
    AdmissionError,
    ConflictError,
)
from open_autoglm.futures import Promise
from open_autoglm.scheduler.admission import new_task_id, task_shape, validate_task
from open_autoglm.scheduler.batching import BatchPolicy
from open_autoglm.scheduler.core import SchedulerCore
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
    TakenOver,
    TaskArrived,
    TaskRecovered,
    TasksLost,
)
from open_autoglm.scheduler.live_task import LiveTask
from open_autoglm.scheduler.ports import SchedulerObserver, StorageLike
from open_autoglm.scheduler.recovery import recover, taken_over_error, tell_taken_over
from open_autoglm.scheduler.resources import Capacity
from open_autoglm.spec.task import TaskSpec, TaskStatus
from open_autoglm.storage.writer import FENCED
from open_autoglm.tasks.base import TaskType

if TYPE_CHECKING:
    from open_autoglm.executors.base import Executor, Outcome

__all__ = ["Scheduler", "SchedulerObserver", "StorageLike"]

log = logging.getLogger(__name__)

# A terminal write, its task, its result and the transition to report once it is stored
# (None: reported already).
_Finished = tuple[Any, LiveTask, Any, tuple[TaskStatus | None, TaskStatus, float] | None]


class Scheduler:
    """Runs the core on a dispatcher thread and carries out its instructions."""

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
        online_reserve_cpu: float = 1.0,
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
        self._clock = clock
        # Receives transitions and events (metrics, event streams); set by the runtime.
        self.observer = observer
        self.core = SchedulerCore(
            aging_s=aging_s,
            retry_base_s=retry_base_s,
            retry_max_s=retry_max_s,
            default_timeout_s=default_timeout_s,
            online_reserve_cpu=online_reserve_cpu,
        )
        # The dispatcher thread drives the core; it holds ``_lock`` while it works. Other
        # threads post events to ``_inbox`` (accepted tasks, finished jobs) and wake it
        # through ``_cv``, whose lock is never held for long: posting costs a deque append,
        # and a pass handles everything posted since the last one.
        self._lock = threading.Lock()
        self._inbox: deque[Event] = deque()
        self._cv = threading.Condition(threading.Lock())
        self._sleeping = False
        self._kicked = False
        self._executors: dict[str, Executor] = {}
        self.live: dict[str, LiveTask] = {}
        self._keys: dict[str, str] = {}
        # What the instructions of one pass leave to do once it ends (under ``_lock``).
        self._finished: list[_Finished] = []
        self._dropped: list[LiveTask] = []
        self._running = False
        self._thread: threading.Thread | None = None
        self._since = clock()  # for the start-rate behind Retry-After

    @property
    def batch_policy(self) -> BatchPolicy:
        return self.core.batch_policy

    @batch_policy.setter
    def batch_policy(self, policy: BatchPolicy) -> None:
        self.core.batch_policy = policy

    @property
    def started_total(self) -> int:
        return self.core.started_total

    # -- lifecycle ---------------------------------------------------------------------------

    def add_executor(self, executor: Executor) -> None:
        self._executors[executor.name] = executor
        cap: Capacity = executor.capacity
        self.core.add_executor(executor.name, cap)

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
            self.core.paused = True
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
            shape=task_shape,
            adopt=self.adopt,
            now=self._clock(),
        )

    def adopt(self, lt: LiveTask) -> None:
        """Take a recovered task back into the queue."""
        with self._lock:
            self.live[lt.id] = lt
            if lt.spec.idempotency_key:
                self._keys[lt.spec.idempotency_key] = lt.id
            self.core.handle(TaskRecovered(lt), self._clock())

    # -- submission --------------------------------------------------------------------------

    def prepare(self, spec: TaskSpec) -> tuple[TaskType, Any]:
        """Resolve the task type and validate params; raises ValidationError."""
        return validate_task(spec, self._resolve_type, self.core.pool)

    def submit(
        self,
        spec: TaskSpec,
        *,
        events: list[tuple[float, str, Any]] | None = None,
        durable: bool = True,
        principal: str | None = None,
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
        tid = new_task_id()
        lt = LiveTask(
            id=tid,
            spec=spec,
            task_type=ttype,
            params=params,
            status=TaskStatus.QUEUED,
            attempts=0,
            created_at=now,
            shape=task_shape(spec, ttype, params),
            durable=durable,
            principal=principal,
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
            "principal": principal,
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
        self._post(TaskArrived(lt))

    def _post(self, event: Event) -> None:
        self._inbox.append(event)
        # The dispatcher sets ``_sleeping`` under ``_cv`` and then re-checks the inbox, so
        # an event appended before this read is seen either way.
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
        waiting = self.core.queued() + len(self._inbox)
        if waiting + n > self.max_queued:
            raise AdmissionError(
                f"queue is full ({waiting} of {self.max_queued} waiting): "
                f"{n} task{'s' if n != 1 else ''} do{'es' if n == 1 else ''} not fit",
                retry_after=self._retry_after(),
            )

    def _retry_after(self) -> float:
        elapsed = max(1.0, self._clock() - self._since)
        rate = max(1.0, self.core.started_total / elapsed)
        return max(1.0, round(self.core.queued() / rate, 1))

    # -- cancellation ------------------------------------------------------------------------

    def cancel(self, task_id: str, reason: str = "cancelled by request") -> dict[str, Any]:
        with self._lock:
            lt = self.live.get(task_id)
            if lt is not None and not lt.status.terminal:
                self._apply_locked(self.core.handle(CancelRequested(lt, reason), self._clock()))
                self._end_pass_locked()
                return lt.as_dict()
        row = self._storage.get_task(task_id)
        raise ConflictError(f"task {task_id} is already {row['status']}")

    def _forget_locked(self, lt: LiveTask) -> None:
        """``lt`` leaves the in-memory view: its record in storage is the one to read now."""
        if self.live.get(lt.id) is lt:
            del self.live[lt.id]
        key = lt.spec.idempotency_key
        if key and self._keys.get(key) == lt.id:
            del self._keys[key]

    # -- dispatch ----------------------------------------------------------------------------

    def _dispatch_loop(self) -> None:
        core = self.core
        while True:
            answered: list[tuple[LiveTask, Any]] = []
            with self._lock:
                if not self._running:
                    return
                now = self._clock()
                inbox = self._inbox
                if inbox:
                    out: list[Instruction] = []
                    while inbox:
                        core.handle(inbox.popleft(), now, out)
                    self._apply_locked(out)
                    self._end_pass_locked(answered)
                self._apply_locked(core.advance(now))
                self._end_pass_locked()
                timeout = 1.0
                at = core.next_timer()
                if at is not None:
                    timeout = max(0.0, min(timeout, at - self._clock()))
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

    def _apply_locked(self, instructions: list[Instruction]) -> None:
        """Carry out the core's instructions in order (under ``_lock``)."""
        for ins in instructions:
            _APPLY[type(ins)](self, ins)

    def _end_pass_locked(self, answered: list[tuple[LiveTask, Any]] | None = None) -> None:
        """Store the terminal writes the pass produced, together."""
        if self._finished:
            finished, self._finished = self._finished, []
            self._flush_finished(finished, answered)

    def _on_enqueued(self, ins: Enqueued) -> None:
        self._observe(ins.task, None, TaskStatus.QUEUED, ins.task.created_at)

    def _on_stop(self, ins: Stop) -> None:
        if ins.task.handle is not None:
            ins.task.handle.cancel(ins.signal.value)

    def _on_dropped(self, ins: Dropped) -> None:
        self._dropped.append(ins.task)

    def _on_requeue(self, ins: Requeue) -> None:
        lt = ins.task
        event = (
            ins.at,
            "status",
            {"status": "queued", "reason": "retry", "retry_in_s": ins.delay, "error": ins.error},
        )
        if lt.pending_events is not None:
            lt.pending_events.append(event)
        else:
            self._storage.write(
                self._write(
                    task_id=lt.id, fields={"status": "queued", "error": ins.error}, events=[event]
                )
            )
        self._observe(lt, TaskStatus.RUNNING, TaskStatus.QUEUED, ins.at)

    def _running_write(self, lt: LiveTask) -> Any:
        """The write that records ``lt``'s start (None for an online task, whose whole record
        is written when it ends)."""
        now = lt.started_at
        assert now is not None
        self._observe(lt, TaskStatus.QUEUED, TaskStatus.RUNNING, now)
        event = (
            now,
            "status",
            {"status": "running", "attempt": lt.attempts, "executor": lt.executor},
        )
        if lt.pending_events is not None:  # online: stored when it ends
            lt.pending_events.append(event)
            return None
        return self._write(
            task_id=lt.id,
            fields={"status": "running", "started_at": now, "attempts": lt.attempts},
            events=[event],
        )

    def _on_start(self, ins: Start) -> None:
        """Record ``ins.tasks`` as running (one grouped write) and hand them to the executor.

        A durable task's handler starts only once its "running" state is committed: after a
        crash, a task the database calls queued has never had side effects. Online tasks are
        never replayed, so they start at once. A batch starts when all its members may.
        """
        members = ins.tasks
        batch = ins.batch
        marked = [(lt, self._running_write(lt)) for lt in members]
        writes = [w for _, w in marked if w is not None]
        written = [lt for lt, w in marked if w is not None]
        runner = self._executors[ins.executor]

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

        waiting: list[LiveTask]
        if batch:
            durable = any(m.durable for m in members)
            waiting, now_ok = (list(members), []) if durable else ([], list(members))
        else:
            waiting = [m for m in members if m.durable]
            now_ok = [m for m in members if not m.durable] if waiting else list(members)
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

    def _on_finish(self, ins: Finish) -> None:
        """Build ``ins.task``'s terminal write; it is stored with the rest of the pass."""
        lt = ins.task
        status = lt.status
        now = lt.finished_at
        assert now is not None
        error = lt.error
        data: dict[str, Any] = {"status": status.value}
        if error:
            data["error"] = error
        if ins.artifacts:
            data["artifacts"] = [a.get("id") for a in ins.artifacts]
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
            result=ins.result,
            has_result=ins.has_result,
        )
        # A durable task's end counts once it is stored as this replica's: a replica that
        # lost its lease must not report a success whose write was fenced.
        seen = (ins.old, status, now) if lt.durable else None
        if seen is None:
            self._observe(lt, ins.old, status, now)
        self._finished.append((write, lt, ins.result, seen))

    # -- executor callbacks (ResultSink) -----------------------------------------------------

    def event(self, task_id: str, kind: str, data: dict[str, Any]) -> None:
        now = self._clock()
        lt = self.live.get(task_id)
        if lt is not None and kind == "progress":
            lt.progress = data
        online = lt is not None and not lt.durable
        write = self._write_online if online else self._write
        self._storage.write(write(task_id=task_id, events=[(now, kind, data)]), lazy=online)
        if self.observer is not None:
            self.observer.on_event(task_id, kind, data)

    def done(self, task_id: str, outcome: Outcome) -> None:
        """The executor's report that a job ended; handled by the dispatcher's next pass."""
        self._post(JobEnded(task_id, outcome))

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
                    lt.done.set_exception(taken_over_error(lt))
                else:
                    lt.done.set_result({**lt.as_dict(), "result": result})

        committed.add_done_callback(stored)

    def durable_ids(self) -> list[str]:
        """Ids of the stored (durable) tasks this scheduler holds, queued or running."""
        return [lt.id for lt in list(self.live.values()) if lt.durable and not lt.status.terminal]

    def abandon(self, task_ids: set[str]) -> int:
        """Stop acting on tasks another replica took over while this one stalled: queued
        ones are dropped, running ones asked to stop (whatever they write is fenced)."""
        with self._lock:
            tasks = tuple(
                lt
                for tid in task_ids
                if (lt := self.live.get(tid)) is not None and lt.durable and not lt.status.terminal
            )
            self._apply_locked(self.core.handle(TakenOver(tasks), self._clock()))
            dropped, self._dropped = self._dropped, []
            for lt in dropped:
                self._forget_locked(lt)
        tell_taken_over(dropped)  # outside the lock: callbacks may call back in
        return len(tasks)

    def _lose(self, lost: list[LiveTask]) -> None:
        """Forget tasks another replica owns now (this one missed its lease): their start
        could not be recorded, or they were still queued here; their waiters learn so."""
        with self._lock:
            self.core.handle(TasksLost(tuple(lost)), self._clock())
            for lt in lost:
                self._forget_locked(lt)
        tell_taken_over(lost)

    def _observe(self, lt: LiveTask, old: TaskStatus | None, new: TaskStatus, now: float) -> None:
        if self.observer is not None:
            self.observer.on_transition(lt, old, new, now)

    # -- reads -------------------------------------------------------------------------------

    def live_task(self, task_id: str) -> LiveTask | None:
        return self.live.get(task_id)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            running = sum(1 for t in list(self.live.values()) if t.status is TaskStatus.RUNNING)
            return {
                "queued": self.core.queued(),
                "running": running,
                "queue_by_priority": self.core.depth_by_priority(),
                "utilization": self.core.pool.utilization(),
                "max_queued": self.max_queued,
            }


# How the adapter carries out each kind of instruction.
_APPLY: dict[type[Any], Callable[[Scheduler, Any], None]] = {
    Enqueued: Scheduler._on_enqueued,
    Start: Scheduler._on_start,
    Stop: Scheduler._on_stop,
    Requeue: Scheduler._on_requeue,
    Finish: Scheduler._on_finish,
    Dropped: Scheduler._on_dropped,
}
