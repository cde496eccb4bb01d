"""The workflow run engine: a pure state machine, events in and instructions out.

:class:`WorkflowRun` holds one run of a validated :class:`~open_autoglm.spec.workflow.WorkflowSpec`.
It does no I/O and never reads a clock: time arrives with :class:`Tick` (or the ``now`` passed
to :meth:`WorkflowRun.handle`), and everything the outside world must do comes back as
instructions (see :mod:`open_autoglm.workflows.protocol`). Adapters — the in-process
:mod:`~open_autoglm.workflows.local_runner`, the scheduler-backed runner — only translate.

Semantics in brief:

- A step becomes eligible once all its upstream steps are finished. Its trigger rule then
  decides: ``all_success`` needs every upstream to have succeeded (otherwise the step is
  skipped, "upstream 'x' failed"), ``any_success`` needs one, ``all_done`` runs regardless.
  Then ``when`` is evaluated; false skips the step ("condition false").
- ``map`` expands into instances ``step[i]``; the step's output is the list of their outputs
  in item order. One instance failing for good fails the step and cancels its siblings.
- A failed attempt is retried while ``retryable`` and retries remain, after an exponential
  backoff (``ScheduleRetry``); a step timeout counts as a retryable failure. A retried
  ``workflow:`` step starts a fresh child whose step ids name the attempt (``sub@2/x``).
- The run fails when a leaf step failed or was skipped because of a failure upstream; a
  failure absorbed by an ``all_done``/``any_success`` step that succeeded does not fail it.
- :meth:`WorkflowRun.to_dict` / :meth:`WorkflowRun.from_dict` round-trip the whole state
  through JSON; :meth:`WorkflowRun.resume` then re-issues what a crash may have lost.

State changes go through :data:`INSTANCE_TRANSITIONS` / :data:`STEP_TRANSITIONS`, ``(from, to)``
tables checked in one place.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from typing import Any, Final

from open_autoglm.errors import ConflictError, NotFoundError
from open_autoglm.spec.expressions import ExpressionError, evaluate, truthy
from open_autoglm.spec.templates import compile_value, render_value
from open_autoglm.spec.workflow import (
    TriggerRule,
    WorkflowSpec,
    bind_inputs,
)
from open_autoglm.workflows.plan import StepPlan
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
    StepState,
    StepSucceeded,
    StepTimedOut,
    SubmitStep,
    Tick,
)
from open_autoglm.workflows.step_state import (
    ACTIVE,
    INSTANCE_TRANSITIONS,
    STEP_TRANSITIONS,
    StepInstance,
    StepRecord,
    move,
)

__all__ = [
    "INSTANCE_TRANSITIONS",
    "MAX_FANOUT",
    "STEP_TRANSITIONS",
    "StepInstance",
    "StepRecord",
    "WorkflowRun",
    "nested_prefix",
    "split_step_id",
]

MAX_FANOUT: Final = 10_000
_FORMAT_VERSION: Final = 1

P, SUB, RUN, RW = StepState.PENDING, StepState.SUBMITTED, StepState.RUNNING, StepState.RETRY_WAIT
OK, FAIL, TO, SKIP, CANC = (
    StepState.SUCCEEDED,
    StepState.FAILED,
    StepState.TIMED_OUT,
    StepState.SKIPPED,
    StepState.CANCELLED,
)


def nested_prefix(step_id: str, attempt: int) -> str:
    """The step-id prefix of a nested run started by ``attempt`` of step ``step_id``.

    The first attempt's child is ``"sub/"``, a retry's is ``"sub@2/"``: each attempt's inner
    steps need ids of their own, or a retry would be answered with the first attempt's
    (idempotent, already failed) tasks, and late outcomes of a stopped child would be
    mistaken for the new child's.
    """
    return f"{step_id}/" if attempt <= 1 else f"{step_id}@{attempt}/"


def split_step_id(local: str) -> tuple[str, int, bool]:
    """``"sub@2/x"`` -> ``("sub", 2, True)``; ``"s[3]"`` -> ``("s[3]", 1, False)``."""
    head, sep, _ = local.partition("/")
    if not sep:
        return head, 1, False
    name, at, generation = head.partition("@")
    if at and generation.isdigit():
        return name, int(generation), True
    return head, 1, True


class WorkflowRun:
    """One run of a workflow. Build it from a spec that passed ``validate_workflow``.

    Args:
        spec: the validated spec.
        inputs: run inputs; defaults are filled and types checked (``ValidationError``).
        run_id: an id the adapter uses for this run; it appears in callback payloads.
        prefix: prepended to step ids (used for nested workflows: ``"sub[0]/"``).
    """

    def __init__(
        self,
        spec: WorkflowSpec,
        inputs: Mapping[str, Any] | None = None,
        *,
        run_id: str = "run",
        prefix: str = "",
    ) -> None:
        self.spec = spec
        self.run_id = run_id
        self.prefix = prefix
        self.inputs = bind_inputs(spec, inputs)
        self.status = RunStatus.PENDING
        self.error: str | None = None
        self.outputs: dict[str, Any] = {}
        self.clock = 0.0
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self.deadline: float | None = None
        self.ignored_events = 0  # late events for attempts already given up on
        self._compiled: dict[str, StepPlan] = {}
        self._dependents: dict[str, list[str]] = {s.name: [] for s in spec.steps}
        for s in spec.steps:
            for d in s.depends_on:
                self._dependents[d].append(s.name)
            self._compiled[s.name] = StepPlan.compile(s, spec)
        self._has_nested = any(s.workflow is not None for s in spec.steps)
        self._leaves = [s.name for s in spec.steps if not self._dependents[s.name]]
        self.steps: dict[str, StepRecord] = {s.name: StepRecord(s.name) for s in spec.steps}
        self._instances: dict[str, StepInstance] = {}
        self._ctx_steps: dict[str, dict[str, Any]] = {}
        self._finished_steps = 0
        self._timers: list[tuple[float, int, str, int, str]] = []
        self._seq = 0
        self._out: list[Instruction] = []

    # ------------------------------------------------------------------ public API

    def start(self, now: float) -> list[Instruction]:
        """Begin the run at ``now``; returns the first submissions."""
        if self.status is not RunStatus.PENDING:
            raise ConflictError(f"run {self.run_id} was already started")
        self.clock = now
        self.started_at = now
        self.status = RunStatus.RUNNING
        if self.spec.timeout_s is not None:
            self.deadline = now + self.spec.timeout_s
        self._advance([s.name for s in self.spec.steps if not s.depends_on])
        return self._flush()

    def handle(self, event: Event, now: float | None = None) -> list[Instruction]:
        """Apply one event; ``now`` defaults to the event's time (Tick) or the last one seen."""
        if isinstance(event, Tick):
            now = event.now
        if now is not None:
            self.clock = max(self.clock, now)
        if self.status.terminal:
            if not isinstance(event, Tick | Cancel):
                self.ignored_events += 1
            return []
        if isinstance(event, Tick):
            self._on_tick()
        elif isinstance(event, Cancel):
            self._terminate(RunStatus.CANCELLED, event.reason)
        else:
            self._on_step_event(event)
        return self._flush()

    def resume(self, now: float, *, resubmit_running: bool = True) -> list[Instruction]:
        """Re-issue what a crash may have lost, after :meth:`from_dict`.

        Steps that finished are never run again. Instances that were submitted or running
        count as a retryable failure ("interrupted") and follow their retry policy, unless
        ``resubmit_running`` is false because the adapter knows they are still alive.
        """
        self.clock = max(self.clock, now)
        if self.status is RunStatus.PENDING:
            return self.start(now)
        if self.status.terminal:
            return []
        for inst in list(self._instances.values()):
            if inst.child is not None and inst.state is RUN:
                self._relay(inst, inst.child.resume(now, resubmit_running=resubmit_running))
            elif inst.state in (SUB, RUN) and resubmit_running:
                self._fail_attempt(inst, "interrupted: the run was resumed after a restart", True)
            elif inst.state is RW and inst.retry_at is not None:
                self._out.append(ScheduleRetry(self._sid(inst), inst.attempt + 1, inst.retry_at))
        self._on_tick()
        if self.status is RunStatus.RUNNING:
            self._advance([n for n, r in self.steps.items() if r.state is P])
            if self._finished_steps == len(self.steps):
                self._finish()
        return self._flush()

    def next_wakeup(self) -> float | None:
        """The earliest time a :class:`Tick` could change something (retry, timeout)."""
        if self.status.terminal:
            return None
        times = [self._timers[0][0]] if self._timers else []
        if self.deadline is not None:
            times.append(self.deadline)
        for inst in self._running_children():
            if inst.child is not None:
                t = inst.child.next_wakeup()
                if t is not None:
                    times.append(t)
        return min(times) if times else None

    def _running_children(self) -> list[StepInstance]:
        # Runs without nested workflows (the common case) skip the scan: next_wakeup is called
        # after every event by adapters, and a scan would make long runs quadratic.
        if not self._has_nested:
            return []
        return [i for i in self._instances.values() if i.child is not None and i.state is RUN]

    def step_states(self) -> dict[str, StepState]:
        return {name: rec.state for name, rec in self.steps.items()}

    def instance(self, step_id: str) -> StepInstance:
        local = step_id[len(self.prefix) :] if step_id.startswith(self.prefix) else step_id
        head, generation, nested = split_step_id(local)
        inst = self._instances.get(head)
        if inst is None:
            raise NotFoundError(f"run {self.run_id} has no step instance {step_id!r}")
        if nested:
            if inst.child is None:
                raise NotFoundError(f"step {head!r} is not a nested workflow")
            if generation != inst.attempt:
                raise NotFoundError(f"step {head!r} is not on attempt {generation} any more")
            return inst.child.instance(step_id)
        return inst

    # ------------------------------------------------------------------ serialisation

    def to_dict(self) -> dict[str, Any]:
        """The whole run state as JSON data (the spec included, secrets too: store it safely)."""
        return {
            "version": _FORMAT_VERSION,
            "run_id": self.run_id,
            "prefix": self.prefix,
            "spec": self.spec.model_dump(mode="json", exclude_unset=True),
            "inputs": self.inputs,
            "status": self.status.value,
            "error": self.error,
            "outputs": self.outputs,
            "clock": self.clock,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "deadline": self.deadline,
            "steps": {name: rec.to_dict() for name, rec in self.steps.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WorkflowRun:
        """Rebuild a run saved by :meth:`to_dict`; call :meth:`resume` next."""
        if data.get("version") != _FORMAT_VERSION:
            raise ConflictError(f"unsupported workflow run format {data.get('version')!r}")
        spec = WorkflowSpec.model_validate(data["spec"])
        run = cls(spec, data["inputs"], run_id=data["run_id"], prefix=data["prefix"])
        run.status = RunStatus(data["status"])
        run.error = data["error"]
        run.outputs = dict(data["outputs"])
        run.clock = float(data["clock"])
        run.started_at = data["started_at"]
        run.finished_at = data["finished_at"]
        run.deadline = data["deadline"]
        for name, saved in data["steps"].items():
            rec = run.steps[name] = StepRecord.from_dict(name, saved, WorkflowRun.from_dict)
            for inst in rec.instances:
                run._instances[inst.id] = inst
                if inst.state is RW and inst.retry_at is not None:
                    run._arm(inst.retry_at, inst, "retry")
                elif inst.state in (SUB, RUN) and inst.deadline is not None:
                    run._arm(inst.deadline, inst, "deadline")
            if rec.state.terminal:
                run._finished_steps += 1
                run._ctx_steps[name] = rec.context()
        return run

    # ------------------------------------------------------------------ advancing the DAG

    def _flush(self) -> list[Instruction]:
        out, self._out = self._out, []
        return out

    def _sid(self, inst: StepInstance) -> str:
        return self.prefix + inst.id

    def _arm(self, at: float, inst: StepInstance, kind: str) -> None:
        self._seq += 1
        heapq.heappush(self._timers, (at, self._seq, inst.id, inst.attempt, kind))

    def _set_step(self, rec: StepRecord, new: StepState, reason: str | None = None) -> None:
        rec.state = move(STEP_TRANSITIONS, f"step {rec.name!r}", rec.state, new)
        if reason is not None:
            rec.reason = reason

    def _set_instance(self, inst: StepInstance, new: StepState) -> None:
        inst.state = move(INSTANCE_TRANSITIONS, f"step {inst.id!r}", inst.state, new)

    def _advance(self, candidates: list[str]) -> None:
        # A worklist, not a scan: each finished step only wakes its dependents, which keeps
        # a long chain linear in its length.
        todo = list(reversed(candidates))
        while todo and self.status is RunStatus.RUNNING:
            name = todo.pop()
            rec = self.steps[name]
            if rec.state is not P:
                continue
            if self._try_start(name, rec):
                todo.extend(reversed(self._dependents[name]))

    def _try_start(self, name: str, rec: StepRecord) -> bool:
        """Start, skip or fail a pending step whose upstream is done; True if it finished."""
        c = self._compiled[name]
        upstream = [self.steps[d] for d in c.spec.depends_on]
        if any(not u.state.terminal for u in upstream):
            return False
        ok = [u for u in upstream if u.state is OK]
        bad = [u for u in upstream if u.state is not OK]
        if c.rule is TriggerRule.ALL_SUCCESS and bad:
            first = bad[0]
            rec.upstream_failed = any(u.state in (FAIL, TO) or u.upstream_failed for u in bad)
            return self._end_step(rec, SKIP, f"upstream {first.name!r} {first.state.value}")
        if c.rule is TriggerRule.ANY_SUCCESS and upstream and not ok:
            rec.upstream_failed = any(u.state in (FAIL, TO) or u.upstream_failed for u in bad)
            return self._end_step(rec, SKIP, "no upstream step succeeded")
        context = {"inputs": self.inputs, "steps": self._ctx_steps}
        if c.when is not None:
            try:
                go = truthy(evaluate(c.when, context))
            except ExpressionError as exc:
                return self._end_step(rec, FAIL, f"condition failed: {exc.message}")
            if not go:
                return self._end_step(rec, SKIP, f"condition false: {c.spec.when}")
        items: list[Any] | None = None
        if c.map is not None:
            try:
                value = evaluate(c.map, context)
            except ExpressionError as exc:
                return self._end_step(rec, FAIL, f"map failed: {exc.message}")
            if not isinstance(value, list):
                return self._end_step(rec, FAIL, f"map gave a {type(value).__name__}, not a list")
            if len(value) > MAX_FANOUT:
                return self._end_step(rec, FAIL, f"map gave {len(value)} items (max {MAX_FANOUT})")
            if not value:
                rec.output = []
                return self._end_step(rec, OK, None)
            items = value
        if items is None:
            rec.instances = [StepInstance(id=name, step=name)]
        else:
            rec.instances = [
                StepInstance(id=f"{name}[{i}]", step=name, index=i, item=it)
                for i, it in enumerate(items)
            ]
        self._set_step(rec, RUN)
        for inst in rec.instances:
            self._instances[inst.id] = inst
        for inst in rec.instances:
            if rec.state is not RUN:
                break  # an earlier instance already failed the step for good
            self._submit(inst)
        return rec.state.terminal

    def _submit(self, inst: StepInstance) -> None:
        c = self._compiled[inst.step]
        context: dict[str, Any] = {"inputs": self.inputs, "steps": self._ctx_steps}
        if inst.index is not None:
            context["item"] = inst.item
            context["index"] = inst.index
        try:
            task = render_value(c.task, context)
            child_inputs = render_value(c.inputs, context)
        except ExpressionError as exc:
            inst.attempt += 1
            self._fail_attempt(inst, f"reference failed: {exc.message}", False)
            return
        inst.attempt += 1
        inst.retry_at = None
        inst.deadline = None
        sid = self._sid(inst)
        if c.spec.workflow is not None:
            self._set_instance(inst, RUN)
            inst.child = WorkflowRun(
                c.spec.workflow,
                child_inputs,
                run_id=self.run_id,
                prefix=nested_prefix(sid, inst.attempt),
            )
            if c.timeout_s is not None:
                inst.deadline = self.clock + c.timeout_s
                self._arm(inst.deadline, inst, "deadline")
            self._relay(inst, inst.child.start(self.clock))
            return
        self._set_instance(inst, SUB)
        self._out.append(
            SubmitStep(sid, inst.step, inst.attempt, task, c.priority, c.timeout_s, inst.index)
        )

    def _relay(
        self, inst: StepInstance, instructions: list[Instruction], *, stopping: bool = False
    ) -> None:
        """Pass a nested run's instructions up; its RunFinished ends the parent instance.

        ``stopping``: the parent itself is cancelling the child (timeout, cancel), so the
        child's "cancelled" finish must not count as a failure to retry.
        """
        for ins in instructions:
            if not isinstance(ins, RunFinished):
                self._out.append(ins)
            elif stopping:
                continue
            elif ins.status is RunStatus.SUCCEEDED:
                self._succeed(inst, ins.outputs)
            elif inst.state in ACTIVE:
                timed_out = ins.status is RunStatus.TIMED_OUT
                self._fail_attempt(
                    inst, ins.error or f"nested workflow {ins.status.value}", True, timed_out
                )

    # ------------------------------------------------------------------ events

    def _on_step_event(
        self, event: StepStarted | StepSucceeded | StepFailed | StepTimedOut
    ) -> None:
        local = (
            event.step_id[len(self.prefix) :]
            if event.step_id.startswith(self.prefix)
            else event.step_id
        )
        head, generation, nested = split_step_id(local)
        inst = self._instances.get(head)
        if inst is None:
            raise NotFoundError(f"run {self.run_id} has no step instance {event.step_id!r}")
        if nested:
            # An outcome from the child of an earlier attempt (cancelled or failed) is late.
            if inst.child is None or inst.state is not RUN or generation != inst.attempt:
                self.ignored_events += 1
                return
            self._relay(inst, inst.child.handle(event, self.clock))
            return
        stale = event.attempt is not None and event.attempt != inst.attempt
        if stale or inst.state not in (SUB, RUN):
            self.ignored_events += 1
            return
        if isinstance(event, StepStarted):
            if inst.state is SUB:
                self._set_instance(inst, RUN)
                timeout = self._compiled[inst.step].timeout_s
                if timeout is not None:
                    inst.deadline = self.clock + timeout
                    self._arm(inst.deadline, inst, "deadline")
        elif isinstance(event, StepSucceeded):
            self._succeed(inst, event.output)
        elif isinstance(event, StepFailed):
            self._fail_attempt(inst, event.error, event.retryable)
        else:
            self._fail_attempt(inst, "step timed out", True, timed_out=True)

    def _on_tick(self) -> None:
        now = self.clock
        if self.deadline is not None and now >= self.deadline:
            self._terminate(RunStatus.TIMED_OUT, f"workflow timed out after {self.spec.timeout_s}s")
            return
        for inst in self._running_children():
            if inst.child is not None and inst.state is RUN:
                self._relay(inst, inst.child.handle(Tick(now)))
        while self._timers and self._timers[0][0] <= now and self.status is RunStatus.RUNNING:
            _, _, iid, attempt, kind = heapq.heappop(self._timers)
            inst = self._instances[iid]
            if inst.attempt != attempt:
                continue  # armed for an attempt that is over
            if kind == "retry" and inst.state is RW:
                self._submit(inst)
            elif kind == "deadline" and inst.state in (SUB, RUN):
                self._stop(inst, "step timed out")
                self._fail_attempt(inst, "step timed out", True, timed_out=True)

    def _succeed(self, inst: StepInstance, output: Any) -> None:
        self._set_instance(inst, OK)
        inst.output = output
        inst.error = None
        rec = self.steps[inst.step]
        rec.finished += 1
        if rec.finished == len(rec.instances) and rec.state is RUN:
            rec.output = inst.output if inst.index is None else [i.output for i in rec.instances]
            if self._end_step(rec, OK, None):
                self._advance(self._dependents[rec.name])

    def _fail_attempt(
        self, inst: StepInstance, error: str, retryable: bool, timed_out: bool = False
    ) -> None:
        rec = self.steps[inst.step]
        policy = self._compiled[inst.step].retries
        inst.error = error
        if retryable and inst.attempt <= policy.max_retries and rec.state is RUN:
            self._set_instance(inst, RW)
            inst.retry_at = self.clock + policy.delay(inst.attempt)
            self._arm(inst.retry_at, inst, "retry")
            self._out.append(ScheduleRetry(self._sid(inst), inst.attempt + 1, inst.retry_at))
            return
        self._set_instance(inst, TO if timed_out else FAIL)
        rec.finished += 1
        if rec.state is not RUN:
            return
        # One instance failing for good fails the step: stop its siblings' work.
        for sib in rec.instances:
            if sib.state in ACTIVE or sib.state is P:
                self._cancel_instance(sib, f"sibling {inst.id} failed")
        what = "timed out" if timed_out else "failed"
        reason = f"{inst.id} {what}: {error}" if inst.index is not None else error
        if self._end_step(rec, TO if timed_out else FAIL, reason):
            self._advance(self._dependents[rec.name])

    def _stop(self, inst: StepInstance, reason: str) -> None:
        """Stop a submitted/running attempt: cancel its task, or its nested run's tasks."""
        if inst.child is not None:
            self._relay(inst, inst.child.handle(Cancel(reason)), stopping=True)
        else:
            self._out.append(CancelStep(self._sid(inst), inst.attempt, reason))

    def _cancel_instance(self, inst: StepInstance, reason: str) -> None:
        if inst.state in (SUB, RUN):
            self._stop(inst, reason)
        if not inst.state.terminal:
            self._set_instance(inst, CANC)
            inst.error = reason
            self.steps[inst.step].finished += 1

    def _end_step(self, rec: StepRecord, state: StepState, reason: str | None) -> bool:
        """Move a step to a terminal state; True so callers can wake its dependents."""
        self._set_step(rec, state, reason)
        self._finished_steps += 1
        self._ctx_steps[rec.name] = rec.context()
        url = self._compiled[rec.name].spec.callback_url
        if url is not None:
            payload: dict[str, Any] = {
                "run_id": self.run_id,
                "workflow": self.spec.name,
                "step": rec.name,
                "status": rec.state.value,
                "output": rec.output,
                "reason": rec.reason,
            }
            self._out.append(SendCallback(url, "step.finished", payload, self.spec.callback_secret))
        if self._finished_steps == len(self.steps) and self.status is RunStatus.RUNNING:
            self._finish()
        return True

    # ------------------------------------------------------------------ finishing

    def _finish(self) -> None:
        failed = [
            n
            for n in self._leaves
            if self.steps[n].state in (FAIL, TO)
            or (self.steps[n].state is SKIP and self.steps[n].upstream_failed)
        ]
        status = RunStatus.FAILED if failed else RunStatus.SUCCEEDED
        error = None
        if failed:
            first = self.steps[failed[0]]
            error = f"step {first.name!r} {first.state.value}: {first.reason}"
        outputs, out_error = self._gather_outputs()
        if out_error is not None and status is RunStatus.SUCCEEDED:
            status, error = RunStatus.FAILED, out_error
        self.outputs = outputs
        self._conclude(status, error)

    def _gather_outputs(self) -> tuple[dict[str, Any], str | None]:
        if not self.spec.outputs:
            return {
                n: self.steps[n].output for n in self._leaves if self.steps[n].state is OK
            }, None
        context = {"inputs": self.inputs, "steps": self._ctx_steps}
        try:
            return render_value(compile_value(self.spec.outputs), context), None
        except ExpressionError as exc:
            return {}, f"outputs failed: {exc.message}"

    def _terminate(self, status: RunStatus, reason: str) -> None:
        """Cancel or time out the run: stop running work, close every unfinished step."""
        for rec in self.steps.values():
            if rec.state.terminal:
                continue
            for inst in rec.instances:
                self._cancel_instance(inst, reason)
            self._set_step(rec, CANC, reason)
            self._finished_steps += 1
            self._ctx_steps[rec.name] = rec.context()
        self.outputs = {}
        self._conclude(status, reason)

    def _conclude(self, status: RunStatus, error: str | None) -> None:
        self.status = status
        self.error = error
        self.finished_at = self.clock
        self._timers.clear()
        self._out.append(RunFinished(status, self.outputs, error))
        if self.spec.callback_url is not None:
            payload: dict[str, Any] = {
                "run_id": self.run_id,
                "workflow": self.spec.name,
                "status": status.value,
                "error": error,
                "outputs": self.outputs,
                "steps": {n: r.state.value for n, r in self.steps.items()},
            }
            self._out.append(
                SendCallback(
                    self.spec.callback_url, "run.finished", payload, self.spec.callback_secret
                )
            )
