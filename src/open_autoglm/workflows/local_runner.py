"""Drive a :class:`~open_autoglm.workflows.engine.WorkflowRun` in-process with a callable.

For tests, examples and the engine benchmark; the platform runs steps through the scheduler
with its own adapter. Each ``SubmitStep`` runs ``run_task(task)`` on a thread pool (or
inline with ``max_workers=0``), and the outcome goes back to the engine as an event:

- a return value -> ``StepSucceeded(output)``;
- :class:`~open_autoglm.errors.TaskTimeoutError` -> ``StepTimedOut``;
- :class:`~open_autoglm.errors.TaskFailedError` -> ``StepFailed(retryable=exc.retryable)``;
- any other exception -> ``StepFailed(retryable=True)`` (treated as transient).

``run_task`` may take a second argument, a :class:`threading.Event` set when the engine
cancels that attempt (timeout, sibling failure, run cancel); Python cannot kill a thread, so
a long task should poll it. Results of cancelled attempts are dropped by the engine.
"""

from __future__ import annotations

import inspect
import queue
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from open_autoglm.errors import TaskFailedError, TaskTimeoutError
from open_autoglm.spec.workflow import WorkflowSpec
from open_autoglm.workflows.engine import WorkflowRun
from open_autoglm.workflows.protocol import (
    Cancel,
    CancelStep,
    Event,
    Instruction,
    RunFinished,
    RunStatus,
    ScheduleRetry,
    SendCallback,
    StepFailed,
    StepStarted,
    StepSucceeded,
    StepTimedOut,
    SubmitStep,
    Tick,
)

__all__ = ["LocalRunResult", "LocalRunner"]

RunTask = Callable[..., Any]


@dataclass
class LocalRunResult:
    status: RunStatus
    outputs: dict[str, Any]
    error: str | None
    run: WorkflowRun
    submissions: list[SubmitStep] = field(default_factory=list)
    callbacks: list[SendCallback] = field(default_factory=list)
    cancellations: list[CancelStep] = field(default_factory=list)
    elapsed_s: float = 0.0


class LocalRunner:
    """Run workflows to completion in this process.

    Args:
        run_task: ``run_task(task_dict)`` or ``run_task(task_dict, cancelled_event)``.
        max_workers: threads for parallel steps; 0 runs each step inline, in order.
        clock: seconds; injectable so tests can fake time.
        on_callback: called with each ``SendCallback`` (e.g. to deliver it over HTTP).
        on_instructions: called with every batch of instructions (e.g. to persist state).
    """

    def __init__(
        self,
        run_task: RunTask,
        *,
        max_workers: int = 8,
        clock: Callable[[], float] = time.monotonic,
        on_callback: Callable[[SendCallback], None] | None = None,
        on_instructions: Callable[[WorkflowRun, list[Instruction]], None] | None = None,
    ) -> None:
        self.run_task = run_task
        self.max_workers = max_workers
        self.clock = clock
        self.on_callback = on_callback
        self.on_instructions = on_instructions
        try:
            self._wants_cancel = len(inspect.signature(run_task).parameters) >= 2
        except (TypeError, ValueError):
            self._wants_cancel = False

    def run(
        self,
        spec: WorkflowSpec | WorkflowRun,
        inputs: Mapping[str, Any] | None = None,
        *,
        run_id: str = "local",
        cancel_after_s: float | None = None,
    ) -> LocalRunResult:
        """Run a validated spec (or resume a restored :class:`WorkflowRun`) to its end."""
        run = spec if isinstance(spec, WorkflowRun) else WorkflowRun(spec, inputs, run_id=run_id)
        events: queue.SimpleQueue[Event] = queue.SimpleQueue()
        cancel_flags: dict[tuple[str, int], threading.Event] = {}
        result = LocalRunResult(RunStatus.RUNNING, {}, None, run)
        t0 = self.clock()
        cancel_at = None if cancel_after_s is None else t0 + cancel_after_s
        pool = ThreadPoolExecutor(self.max_workers) if self.max_workers > 0 else None
        try:
            first = run.start(t0) if run.status is RunStatus.PENDING else run.resume(t0)
            finished = self._apply(run, first, events, cancel_flags, pool, result)
            while not finished:
                wake = run.next_wakeup()
                if cancel_at is not None:
                    wake = cancel_at if wake is None else min(wake, cancel_at)
                now = self.clock()
                if cancel_at is not None and now >= cancel_at:
                    cancel_at = None
                    event: Event = Cancel("cancelled by the caller")
                else:
                    try:
                        event = events.get(timeout=None if wake is None else max(0.0, wake - now))
                    except queue.Empty:
                        event = Tick(self.clock())
                out = run.handle(event, self.clock())
                if wake is not None and not isinstance(event, Tick) and self.clock() >= wake:
                    out += run.handle(Tick(self.clock()))
                finished = self._apply(run, out, events, cancel_flags, pool, result)
        finally:
            for flag in cancel_flags.values():
                flag.set()
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
        result.elapsed_s = self.clock() - t0
        return result

    def _apply(
        self,
        run: WorkflowRun,
        instructions: list[Instruction],
        events: queue.SimpleQueue[Event],
        cancel_flags: dict[tuple[str, int], threading.Event],
        pool: ThreadPoolExecutor | None,
        result: LocalRunResult,
    ) -> bool:
        if self.on_instructions is not None and instructions:
            self.on_instructions(run, instructions)
        pending = list(instructions)
        done = False
        while pending:
            ins = pending.pop(0)
            if isinstance(ins, SubmitStep):
                result.submissions.append(ins)
                flag = threading.Event()
                cancel_flags[(ins.step_id, ins.attempt)] = flag
                if pool is None:
                    self._execute(ins, flag, events)
                    # Inline mode: feed the outcome straight back, in submission order.
                    while not events.empty():
                        more = run.handle(events.get(), self.clock())
                        if self.on_instructions is not None and more:
                            self.on_instructions(run, more)
                        pending.extend(more)
                else:
                    pool.submit(self._execute, ins, flag, events)
            elif isinstance(ins, CancelStep):
                result.cancellations.append(ins)
                stop = cancel_flags.pop((ins.step_id, ins.attempt), None)
                if stop is not None:
                    stop.set()
            elif isinstance(ins, SendCallback):
                result.callbacks.append(ins)
                if self.on_callback is not None:
                    self.on_callback(ins)
            elif isinstance(ins, RunFinished):
                result.status, result.outputs, result.error = ins.status, ins.outputs, ins.error
                done = True
            elif isinstance(ins, ScheduleRetry):
                pass  # the loop sleeps until run.next_wakeup(), which includes this retry
        return done

    def _execute(
        self, ins: SubmitStep, flag: threading.Event, events: queue.SimpleQueue[Event]
    ) -> None:
        events.put(StepStarted(ins.step_id, ins.attempt))
        try:
            if self._wants_cancel:
                output = self.run_task(ins.task, flag)
            else:
                output = self.run_task(ins.task)
        except TaskTimeoutError:
            events.put(StepTimedOut(ins.step_id, ins.attempt))
        except TaskFailedError as exc:
            events.put(StepFailed(ins.step_id, exc.message, exc.retryable, ins.attempt))
        except Exception as exc:
            events.put(StepFailed(ins.step_id, f"{type(exc).__name__}: {exc}", True, ins.attempt))
        else:
            events.put(StepSucceeded(ins.step_id, output, ins.attempt))
