"""The ``local`` executor: worker threads for in-process work, subprocesses for killable work."""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from open_autoglm.executors.base import Job, Outcome, OutcomeStatus, ResultSink
from open_autoglm.executors.context import ThreadContext
from open_autoglm.executors.outcome import iter_batch_outcomes, run_handler
from open_autoglm.executors.subprocess_runner import ProcessJob
from open_autoglm.scheduler.resources import Capacity
from open_autoglm.tasks.base import ExecutionMode, TaskContext

__all__ = ["LocalExecutor"]

log = logging.getLogger(__name__)


class _ThreadHandle:
    __slots__ = ("ctx",)

    def __init__(self, ctx: ThreadContext) -> None:
        self.ctx = ctx

    def cancel(self, reason: str) -> None:
        self.ctx.cancel(reason)


class LocalExecutor:
    """Runs jobs on this machine.

    Thread jobs share a fixed pool of worker threads; process jobs each get a fresh spawned
    interpreter that can be killed at a deadline. Capacity is what the scheduler places
    against; the thread count only bounds concurrency of in-process work.
    """

    def __init__(
        self,
        *,
        name: str = "local",
        capacity: Capacity,
        threads: int,
        save_artifact: Callable[..., dict[str, Any]],
        load_artifact: Callable[[str], bytes],
        record_artifact: Callable[..., dict[str, Any]],
        artifact_root: str,
        services: Mapping[str, Any],
        process_env: Mapping[str, Any],
    ) -> None:
        self.name = name
        self.capacity = capacity
        self._threads = threads
        # Work items: (jobs, sink, contexts); a batch is one item. Workers pop from the deque
        # and sleep on the condition only when it is empty, so a busy pool takes new work
        # without a wake-up per job.
        self._pending: deque[tuple[list[Job], ResultSink, list[ThreadContext]]] = deque()
        self._cv = threading.Condition(threading.Lock())
        self._idle = 0
        self._stopping = False
        self._workers: list[threading.Thread] = []
        self._save = save_artifact
        self._load = load_artifact
        self._record = record_artifact
        self._artifact_root = artifact_root
        self._services = services
        self._process_env = dict(process_env)

    def start(self) -> None:
        for i in range(self._threads):
            t = threading.Thread(target=self._work, name=f"autoglm-worker-{i}", daemon=True)
            t.start()
            self._workers.append(t)

    def describe(self) -> dict[str, Any]:
        """What /readyz shows about where work runs."""
        cap = self.capacity
        return {
            "backend": self.name,
            "capacity": {"cpu": cap.cpu, "memory_mb": cap.memory_mb, "gpu": cap.gpu},
            "threads": self._threads,
        }

    def submit(self, job: Job, sink: ResultSink) -> Any:
        return self.submit_many([job], sink)[0]

    def submit_many(self, jobs: list[Job], sink: ResultSink) -> list[Any]:
        """Start independent jobs; one handle per job, in order."""
        handles: list[Any] = []
        items: list[tuple[list[Job], ResultSink, list[ThreadContext]]] = []
        for job in jobs:
            if job.task_type.mode is ExecutionMode.PROCESS:
                handles.append(self._start_process(job, sink))
                continue
            ctx = self._context(job, sink)
            items.append(([job], sink, [ctx]))
            handles.append(_ThreadHandle(ctx))
        if items:
            self._enqueue(items)
        return handles

    def _start_process(self, job: Job, sink: ResultSink) -> Any:
        """Start a process-mode job (killable work): here, a fresh spawned interpreter."""
        pj = ProcessJob(
            job,
            sink,
            artifact_root=self._artifact_root,
            record_artifact=self._record,
            env=self._process_env,
            services=self._services,
        )
        pj.start()
        return pj

    def submit_batch(self, jobs: list[Job], sink: ResultSink) -> list[Any]:
        """Run jobs of one batch group together through their type's ``batch_handler``."""
        ctxs = [self._context(job, sink) for job in jobs]
        self._enqueue([(jobs, sink, ctxs)])
        return [_ThreadHandle(c) for c in ctxs]

    def _enqueue(self, items: list[tuple[list[Job], ResultSink, list[ThreadContext]]]) -> None:
        self._pending.extend(items)
        with self._cv:
            if self._idle:
                self._cv.notify(min(len(items), self._idle))

    def _next(self) -> tuple[list[Job], ResultSink, list[ThreadContext]] | None:
        """The next work item, sleeping while there is none; None once shut down."""
        try:
            return self._pending.popleft()
        except IndexError:
            pass
        with self._cv:
            while True:
                try:
                    return self._pending.popleft()
                except IndexError:
                    if self._stopping:
                        return None
                self._idle += 1
                self._cv.wait()
                self._idle -= 1

    def _context(self, job: Job, sink: ResultSink) -> ThreadContext:
        tid = job.task_id

        def emit(kind: str, data: dict[str, Any]) -> None:
            sink.event(tid, kind, data)

        return ThreadContext(
            task_id=tid,
            task_type=job.task_type.name,
            model=job.model,
            input=job.input,
            params=job.params,
            metadata=job.metadata,
            cpu_threads=job.cpu_threads,
            emit=emit,
            save_artifact=self._save,
            load_artifact=self._load,
            services=self._services,
        )

    def shutdown(self, wait: bool = True) -> None:
        """Workers finish what is queued, then exit."""
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        if wait:
            for t in self._workers:
                t.join(timeout=5)

    def _work(self) -> None:
        while True:
            item = self._next()
            if item is None:
                return
            jobs, sink, ctxs = item
            live: list[tuple[Job, ThreadContext]] = []
            for job, ctx in zip(jobs, ctxs, strict=True):
                if ctx.is_cancelled():
                    _finish(sink, job, ctx, _not_started(ctx))
                else:
                    live.append((job, ctx))
            if len(live) == 1 or (live and live[0][0].task_type.batch_handler is None):
                for job, ctx in live:
                    _finish(sink, job, ctx, run_handler(job.task_type.handler, ctx))
            elif live:
                handler = live[0][0].task_type.batch_handler
                assert handler is not None
                batch_ctxs: list[TaskContext] = [c for _, c in live]
                # Each member finishes as soon as the handler has its result.
                for i, outcome in iter_batch_outcomes(handler, batch_ctxs):
                    _finish(sink, *live[i], outcome)


def _finish(sink: ResultSink, job: Job, ctx: ThreadContext, outcome: Outcome) -> None:
    """Report ``job``'s outcome (with the artifacts it saved) to the scheduler."""
    if ctx.artifacts:
        outcome = Outcome(
            outcome.status, outcome.result, outcome.error, outcome.retryable, ctx.artifacts
        )
    try:
        sink.done(job.task_id, outcome)
    except Exception:  # the sink must never kill a worker
        log.exception("result sink failed for task %s", job.task_id)


def _not_started(ctx: ThreadContext) -> Outcome:
    if ctx.cancel_reason == "timeout":
        return Outcome(
            OutcomeStatus.FAILED, error={"code": "timeout", "message": "task exceeded its timeout"}
        )
    return Outcome(
        OutcomeStatus.CANCELLED, error={"code": "cancelled", "message": "cancelled before start"}
    )
