"""The platform's workflow runner: the pure engine driven by the scheduler and storage.

:class:`WorkflowService` is a thin adapter around :class:`~open_autoglm.workflows.engine.
WorkflowRun`. One thread owns every engine: it takes messages from an inbox (a run to
start, a cancel request, a step task that started or finished), feeds them to the engine as
events, sends the engine a :class:`Tick` when its ``next_wakeup`` comes (retries, step and
run timeouts), then, per batch:

1. writes each touched run (engine state, the tasks about to be submitted, callbacks to send,
   the step transitions) in one transaction — before acting, so a crash never leaves work
   started that the stored state does not know about;
2. carries out the instructions: ``SubmitStep`` becomes a task submitted through
   ``runtime.submit`` (the scheduler decides when it runs; the step's priority and timeout
   apply; ``max_retries`` is 0 because the engine owns retries), ``CancelStep`` cancels the
   step's task, ``SendCallback`` is delivered on a small pool with every attempt stored.

Every step task carries the idempotency key ``wf:<run>:<step>:<attempt>``. That key is what
makes restart safe: on startup the service reloads unfinished runs (``WorkflowRun.from_dict``
then ``resume`` without resubmitting) and submits each in-flight attempt again with its
stored task and key. The scheduler answers with the existing task — re-attached if the
crash recovery re-queued it, or read back finished (its result is used, it is not run
again) — or creates it if the crash came before its row was committed. Steps that had
finished are never run again; a task the core failed at recovery follows the step's retry
policy.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from open_autoglm.errors import (
    AdmissionError,
    AutoGLMError,
    ConflictError,
    NotFoundError,
    ValidationError,
)
from open_autoglm.resilience.outbound import outbound_policy
from open_autoglm.spec.workflow import WorkflowSpec, parse_workflow_text, validate_workflow
from open_autoglm.storage.workflows_repo import RunWrite, WorkflowRepo
from open_autoglm.workflows.callbacks import DeliveryAttempt, deliver_callback
from open_autoglm.workflows.engine import WorkflowRun
from open_autoglm.workflows.inbox import (
    AcceptedMsg,
    CancelMsg,
    LiveRun,
    Msg,
    RecoverMsg,
    StartMsg,
    StepEventMsg,
    in_flight,
    task_event,
)
from open_autoglm.workflows.protocol import (
    Cancel,
    CancelStep,
    Event,
    Instruction,
    RunFinished,
    SendCallback,
    StepFailed,
    StepStarted,
    SubmitStep,
    Tick,
)
from open_autoglm.workflows.run_view import describe_run, instance_states, redact_spec

if TYPE_CHECKING:
    from open_autoglm.runtime import Runtime

__all__ = ["WorkflowService", "bus_key", "step_task_key"]

log = logging.getLogger(__name__)


def step_task_key(run_id: str, step_id: str, attempt: int) -> str:
    """The idempotency key of a step attempt's task (at most 200 characters)."""
    if len(step_id) > 120:
        step_id = hashlib.sha256(step_id.encode()).hexdigest()[:40]
    return f"wf:{run_id}:{step_id}:{attempt}"


def bus_key(run_id: str) -> str:
    """The event-bus channel of a run's live events."""
    return f"workflow:{run_id}"


class WorkflowService:
    """Run workflows through the scheduler, persisted, resumable; see the module docstring.

    Args:
        runtime: the started platform (scheduler, storage, event bus).
        clock: wall-clock seconds; engine times are persisted, so they must survive restarts.
    """

    def __init__(self, runtime: Runtime, *, clock: Callable[[], float] = time.time) -> None:
        self.runtime = runtime
        self.settings = runtime.settings.workflows
        self.outbound = outbound_policy(runtime.settings)
        self.repo = WorkflowRepo(runtime.storage.engine)
        self._clock = clock
        self._inbox: queue.SimpleQueue[Msg] = queue.SimpleQueue()
        self._runs: dict[str, LiveRun] = {}
        self._thread: threading.Thread | None = None
        self._callbacks: ThreadPoolExecutor | None = None
        self.stats = {"batches": 0, "events": 0, "submitted": 0, "reattached": 0}

    # ------------------------------------------------------------------ lifecycle

    def start(self, *, recover: bool = True) -> None:
        """Start the engine thread; resume unfinished runs first (blocks until they are)."""
        if self._thread is not None:
            return
        self._callbacks = ThreadPoolExecutor(2, thread_name_prefix="autoglm-wf-callback")
        self._thread = threading.Thread(target=self._loop, name="autoglm-workflows", daemon=True)
        self._thread.start()
        if recover:
            reply: Future[int] = Future()
            self._inbox.put(RecoverMsg(reply))
            n = reply.result(timeout=120)
            if n:
                log.info("workflows: resumed %d unfinished run(s)", n)
            for cb in self.repo.pending_callbacks(self.runtime.replica_id):
                self._send_callback(
                    cb["id"], cb["run_id"], cb["url"], cb["event"], cb["payload"], None,
                    done_before=cb["attempts"],
                )  # fmt: skip

    def takeover(self) -> None:
        """Adopt the unfinished runs of replicas that died (called on each lease renewal)."""
        if self._thread is not None:
            self._inbox.put(RecoverMsg(Future()))

    def stop(self) -> None:
        if self._thread is None:
            return
        self._inbox.put(None)
        self._thread.join(timeout=10)
        self._thread = None
        if self._callbacks is not None:
            self._callbacks.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------ public API

    def validate(self, doc: WorkflowSpec | Mapping[str, Any] | str) -> WorkflowSpec:
        """Validate against the registered task types and the core's TaskSpec checks."""
        known = {t.name for t in self.runtime.plugins.task_types()}
        if isinstance(doc, str):
            doc = parse_workflow_text(doc, self.runtime.settings.limits)
        spec = validate_workflow(doc, known_task_types=known, validate_task=self._check_task)
        for loc, url in _callback_urls(spec):  # 422 naming the field, before anything is stored
            self.outbound.check_url(url, loc=loc)
        return spec

    def _check_task(self, step: str, task: dict[str, Any]) -> list[Any]:
        """The core's TaskSpec checks on a step's task, before its references are resolved.

        A problem located at (or inside) a value that holds a ``${...}`` reference is left
        out: it can only be judged once the reference is rendered, at submission.
        """
        try:
            self.runtime.scheduler.prepare(self.runtime.parse(task))
        except ValidationError as exc:
            if not exc.details:
                return [exc.message]
            return [d for d in exc.details if not _under_reference(task, d.get("loc", []))]
        return []

    def submit(
        self,
        doc: WorkflowSpec | Mapping[str, Any] | str,
        inputs: Mapping[str, Any] | None = None,
        *,
        principal: str | None = None,
    ) -> Future[dict[str, Any]]:
        """Validate and start a run; the future gives the run once it is stored.

        Raises ``ValidationError`` (every problem listed) before anything is stored.
        ``principal``: whose run it is (an API key's owner); its step tasks are theirs too.
        """
        spec = doc if isinstance(doc, WorkflowSpec) else self.validate(doc)
        run_id = uuid.uuid4().hex
        run = WorkflowRun(spec, inputs, run_id=run_id)  # binds inputs: may raise
        now = self._clock()
        created = {
            "name": spec.name,
            "spec": redact_spec(spec.model_dump(mode="json", exclude_unset=True)),
            "inputs": run.inputs,
            "callback_secret": spec.callback_secret or self.settings.callback_secret,
            "created_at": now,
            "owner": self.runtime.replica_id,
            "principal": principal,
        }
        reply: Future[dict[str, Any]] = Future()
        self._inbox.put(StartMsg(run, created, reply))
        return reply

    def cancel(self, run_id: str, reason: str = "cancelled by request") -> Future[dict[str, Any]]:
        reply: Future[dict[str, Any]] = Future()
        self._inbox.put(CancelMsg(run_id, reason, reply))
        return reply

    def wait(self, run_id: str, timeout: float | None = None) -> dict[str, Any]:
        """Block until the run ends (if it is live here); returns its stored view."""
        live = self._runs.get(run_id)
        if live is not None:
            live.done.result(timeout)
        return self.get(run_id)

    def get(self, run_id: str) -> dict[str, Any]:
        row = self.repo.get_run(run_id)
        return describe_run(row, self.repo.step_tasks(run_id))

    def live_runs(self) -> int:
        return len(self._runs)

    # ------------------------------------------------------------------ the engine thread

    def _loop(self) -> None:
        while True:
            batch: list[Msg] = []
            try:
                first = self._inbox.get(timeout=self._wait_s())
            except queue.Empty:
                pass  # a timer is due: the batch is just a tick
            else:
                if first is None:
                    return
                batch.append(first)
            stop = False
            while len(batch) < 2000:
                try:
                    more = self._inbox.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                batch.append(more)
            try:
                self._process(batch)
            except Exception:
                log.exception("workflow batch failed")
            if stop:
                return

    def _wait_s(self) -> float:
        wakes = [w for live in self._runs.values() if (w := live.run.next_wakeup()) is not None]
        if not wakes:
            return 1.0
        return max(0.0, min(1.0, min(wakes) - self._clock()))

    def _process(self, batch: list[Msg]) -> None:
        out: dict[str, list[Instruction]] = {}
        replies: list[tuple[Future[Any], Callable[[], Any]]] = []
        for msg in batch:
            self.stats["events"] += 1
            try:
                self._apply(msg, out, replies)
            except Exception as exc:
                log.exception("workflow message %r failed", type(msg).__name__)
                reply = getattr(msg, "reply", None)
                if isinstance(reply, Future) and not reply.done():
                    reply.set_exception(exc)
        now = self._clock()
        for run_id, live in list(self._runs.items()):
            wake = live.run.next_wakeup()
            if wake is not None and wake <= now:
                out.setdefault(run_id, []).extend(live.run.handle(Tick(now)))
        if not out and not replies:
            return
        self.stats["batches"] += 1
        writes, published, sends = self._writes(out, now)
        try:
            lost = self.repo.save(writes)
        except Exception as exc:
            log.exception("could not store workflow state")
            for reply, _ in replies:
                if not reply.done():
                    reply.set_exception(exc)
            return
        for run_id in lost:  # taken over while we stalled: the new owner drives it now
            log.warning("workflow run %s was taken over by another replica; dropping it", run_id)
            published.pop(run_id, None)
            if (gone := self._runs.pop(run_id, None)) is not None:
                gone.done.set_result({"status": "taken_over", "error": None})
        for send in sends:
            if send[1] not in lost:
                self._send_callback(*send)
        for run_id, instructions in out.items():
            self._execute(run_id, instructions)  # a lost run is no longer in _runs: a no-op
        for reply, value in replies:
            if not reply.done():
                try:
                    reply.set_result(value())
                except Exception as exc:
                    reply.set_exception(exc)
        for run_id, events in published.items():
            for _, kind, data in events:
                self.runtime.bus.publish(bus_key(run_id), kind, data)

    def _apply(
        self,
        msg: Msg,
        out: dict[str, list[Instruction]],
        replies: list[tuple[Future[Any], Callable[[], Any]]],
    ) -> None:
        if isinstance(msg, StepEventMsg):
            live = self._runs.get(msg.run_id)
            if live is not None:
                try:
                    out.setdefault(msg.run_id, []).extend(live.run.handle(msg.event, self._clock()))
                except NotFoundError as exc:
                    log.warning("workflow %s: %s", msg.run_id, exc.message)
        elif isinstance(msg, AcceptedMsg):
            self._accepted(msg)
        elif isinstance(msg, StartMsg):
            live = LiveRun(msg.run, created=msg.created, principal=msg.created.get("principal"))
            self._runs[msg.run.run_id] = live
            out.setdefault(msg.run.run_id, []).extend(msg.run.start(self._clock()))
            replies.append((msg.reply, functools.partial(self.get, msg.run.run_id)))
        elif isinstance(msg, CancelMsg):
            live = self._runs.get(msg.run_id)
            if live is None:
                row = self.repo.get_run(msg.run_id, with_state=False)  # NotFoundError
                raise ConflictError(f"workflow run {msg.run_id} is already {row['status']}")
            out.setdefault(msg.run_id, []).extend(live.run.handle(Cancel(msg.reason)))
            replies.append((msg.reply, functools.partial(self.get, msg.run_id)))
        elif isinstance(msg, RecoverMsg):
            n = self._recover(out)
            replies.append((msg.reply, functools.partial(int, n)))

    def _writes(
        self, out: dict[str, list[Instruction]], now: float
    ) -> tuple[
        list[RunWrite],
        dict[str, list[tuple[float, str, dict[str, Any]]]],
        list[tuple[str, str, str, str, dict[str, Any], str | None]],
    ]:
        """One write per touched run, the events to publish, the callbacks to send."""
        writes: list[RunWrite] = []
        published: dict[str, list[tuple[float, str, dict[str, Any]]]] = {}
        sends: list[tuple[str, str, str, str, dict[str, Any], str | None]] = []
        for run_id, instructions in out.items():
            live = self._runs[run_id]
            run = live.run
            state = run.to_dict()
            events = self._diff(live, state, now)
            step_tasks = []
            callbacks = []
            for ins in instructions:
                if isinstance(ins, SubmitStep):
                    spec = self._task_spec(run_id, ins)
                    step_tasks.append(
                        {
                            "step_id": ins.step_id,
                            "attempt": ins.attempt,
                            "task": spec,
                            "idempotency_key": spec["idempotency_key"],
                        }
                    )
                elif isinstance(ins, SendCallback):
                    cb_id = uuid.uuid4().hex
                    callbacks.append(
                        {"id": cb_id, "event": ins.event, "url": ins.url, "payload": ins.payload}
                    )
                    # The secret goes to the sender only; the stored row never holds it.
                    sends.append((cb_id, run_id, ins.url, ins.event, ins.payload, ins.secret))
            writes.append(
                RunWrite(
                    run_id=run_id,
                    status=run.status.value,
                    state=state,
                    error=run.error,
                    updated_at=now,
                    finished_at=now if run.status.terminal else None,
                    created=live.created,
                    step_tasks=step_tasks,
                    callbacks=callbacks,
                    events=events,
                    owner=self.runtime.replica_id,
                )
            )
            live.created = None
            published[run_id] = events
        return writes, published, sends

    def _diff(
        self, live: LiveRun, state: dict[str, Any], now: float
    ) -> list[tuple[float, str, dict[str, Any]]]:
        events: list[tuple[float, str, dict[str, Any]]] = []
        if live.was_status != state["status"]:
            live.was_status = state["status"]
            events.append((now, "run", {"status": state["status"], "error": state["error"]}))
        for key, kind, data in instance_states(state):
            sig = (data["status"], data.get("attempt"))
            if live.snapshot.get(key) != sig:
                live.snapshot[key] = sig
                events.append((now, kind, data))
        if state["status"] not in ("pending", "running"):
            # The run event goes last so a stream can stop at it.
            events.sort(key=lambda e: e[1] == "run")
        return events

    def _task_spec(self, run_id: str, ins: SubmitStep) -> dict[str, Any]:
        spec = dict(ins.task)
        spec["priority"] = ins.priority
        if ins.timeout_s is not None:
            spec["timeout_s"] = ins.timeout_s
        spec["max_retries"] = 0  # the engine retries, with the step's policy
        spec["idempotency_key"] = step_task_key(run_id, ins.step_id, ins.attempt)
        meta = spec.get("metadata")
        spec["metadata"] = {
            **(meta if isinstance(meta, dict) else {}),
            "workflow_run": run_id,
            "workflow_step": ins.step_id,
            "workflow_attempt": ins.attempt,
        }
        return spec

    # ------------------------------------------------------------------ carrying out instructions

    def _execute(self, run_id: str, instructions: list[Instruction]) -> None:
        live = self._runs.get(run_id)
        if live is None:
            return
        for ins in instructions:
            if isinstance(ins, SubmitStep):
                self._submit_task(run_id, ins.step_id, ins.attempt, self._task_spec(run_id, ins))
            elif isinstance(ins, CancelStep):
                tid = live.tasks.get((ins.step_id, ins.attempt))
                if tid is None:
                    live.pending_cancel.add((ins.step_id, ins.attempt))
                else:
                    self._cancel_task(tid, ins.reason)
            elif isinstance(ins, RunFinished):
                del self._runs[run_id]
                live.done.set_result({"status": ins.status.value, "error": ins.error})

    def _submit_task(self, run_id: str, step_id: str, attempt: int, spec: dict[str, Any]) -> None:
        self.stats["submitted"] += 1
        try:
            live = self._runs.get(run_id)
            principal = live.principal if live is not None else None
            # a step reads only artifacts the run's owner may see
            accepted = self.runtime.submit(spec, principal=principal, artifact_reader=principal)
        except AutoGLMError as exc:
            retryable = isinstance(exc, AdmissionError)
            # Details the message does not already say (it often summarises them itself).
            extra = [str(d.get("msg")) for d in exc.details[:3]]
            detail = "; ".join(m for m in extra if m not in exc.message)
            message = f"task rejected: {exc.message}" + (f" ({detail})" if detail else "")
            self._inbox.put(StepEventMsg(run_id, StepFailed(step_id, message, retryable, attempt)))
            return

        def on_accepted(f: Future[tuple[dict[str, Any], bool]]) -> None:
            # Runs in the storage writer's thread: no blocking work here.
            try:
                task, _ = f.result()
            except BaseException as exc:
                event = StepFailed(step_id, f"task not accepted: {exc}", True, attempt)
                self._inbox.put(StepEventMsg(run_id, event))
                return
            self._watch(run_id, step_id, attempt, task["id"])

        accepted.add_done_callback(on_accepted)

    def _watch(self, run_id: str, step_id: str, attempt: int, task_id: str) -> None:
        handle = self.runtime.track(task_id)
        lt = handle.live
        if lt is None:  # it finished (and was stored) already: read it in the engine thread
            self._inbox.put(AcceptedMsg(run_id, step_id, attempt, task_id, live=False))
            return
        self._inbox.put(AcceptedMsg(run_id, step_id, attempt, task_id, live=True))

        def on_status(kind: str, data: dict[str, Any]) -> None:
            if kind == "status" and data.get("status") == "running":
                self._inbox.put(StepEventMsg(run_id, StepStarted(step_id, attempt)))

        unsubscribe = self.runtime.bus.subscribe(task_id, on_status)
        if lt.status.value == "running":
            self._inbox.put(StepEventMsg(run_id, StepStarted(step_id, attempt)))

        def on_done(d: Future[dict[str, Any]]) -> None:
            unsubscribe()
            try:
                final = d.result()
            except BaseException as exc:
                event: Event = StepFailed(step_id, f"task outcome lost: {exc}", True, attempt)
            else:
                event = task_event(step_id, attempt, final)
            self._inbox.put(StepEventMsg(run_id, event))

        handle.add_done_callback(on_done)

    def _accepted(self, msg: AcceptedMsg) -> None:
        live = self._runs.get(msg.run_id)
        try:
            if not self.repo.set_task_id(
                msg.run_id, msg.step_id, msg.attempt, msg.task_id, self.runtime.replica_id
            ):
                log.info("task %s of %s/%s not recorded: this replica no longer drives the run",
                         msg.task_id, msg.run_id, msg.step_id)  # fmt: skip
        except Exception:
            log.exception("could not record the task of %s/%s", msg.run_id, msg.step_id)
        if live is not None:
            key = (msg.step_id, msg.attempt)
            live.tasks[key] = msg.task_id
            if key in live.pending_cancel:
                live.pending_cancel.discard(key)
                self._cancel_task(msg.task_id, "cancelled by the workflow")
        if not msg.live:
            final = self.runtime.get_task(msg.task_id)
            event = task_event(msg.step_id, msg.attempt, final)
            self._inbox.put(StepEventMsg(msg.run_id, event))

    def _cancel_task(self, task_id: str, reason: str) -> None:
        try:
            self.runtime.scheduler.cancel(task_id, reason)
        except (ConflictError, NotFoundError):
            pass  # it finished meanwhile; the engine drops the late outcome

    # ------------------------------------------------------------------ restart

    def _recover(self, out: dict[str, list[Instruction]]) -> int:
        now = self._clock()
        rows = self.repo.claim_unfinished_runs(self.runtime.replica_id)
        for row in rows:
            try:
                run = WorkflowRun.from_dict(row["state"])
                instructions = run.resume(now, resubmit_running=False)
            except Exception:
                log.exception("workflow run %s cannot be resumed", row["id"])
                continue
            live = LiveRun(run, was_status=run.status.value, principal=row.get("principal"))
            for key, _, data in instance_states(row["state"]):
                live.snapshot[key] = (data["status"], data.get("attempt"))
            self._runs[run.run_id] = live
            out.setdefault(run.run_id, []).extend(instructions)
            stored = {(t["step_id"], t["attempt"]): t for t in self.repo.step_tasks(run.run_id)}
            for step_id, attempt in in_flight(row["state"]):
                t = stored.get((step_id, attempt))
                if t is None:
                    event = StepFailed(step_id, "interrupted: its task was never recorded", True)
                    self._inbox.put(StepEventMsg(run.run_id, event))
                    continue
                self.stats["reattached"] += 1
                self._submit_task(run.run_id, step_id, attempt, t["task"])
        return len(rows)

    # ------------------------------------------------------------------ callbacks

    def _send_callback(
        self,
        callback_id: str,
        run_id: str,
        url: str,
        event: str,
        payload: dict[str, Any],
        secret: str | None,
        *,
        done_before: int = 0,
    ) -> None:
        if self._callbacks is None:
            return
        s = self.settings
        remaining = s.callback_max_attempts - done_before
        if remaining <= 0:
            return

        def deliver() -> None:
            key = secret or self.repo.callback_secret(run_id) or s.callback_secret

            def record(a: DeliveryAttempt, final: bool) -> None:
                data = a.to_dict()
                data["attempt"] += done_before
                status = "delivered" if a.ok else ("failed" if final else "pending")
                self.repo.record_callback_attempt(callback_id, run_id, data, status)

            try:
                deliver_callback(
                    url,
                    payload,
                    key,
                    max_attempts=remaining,
                    backoff_s=s.callback_backoff_s,
                    timeout_s=s.callback_timeout_s,
                    event=event,
                    on_attempt=record,
                    policy=self.outbound,
                )
            except Exception:
                log.exception("callback %s to %s failed", callback_id, url)

        self._callbacks.submit(deliver)


def _callback_urls(
    spec: WorkflowSpec, loc: tuple[str | int, ...] = ()
) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """Every callback URL of a workflow, its steps' and its nested workflows', with its place."""
    if spec.callback_url:
        yield (*loc, "callback_url"), spec.callback_url
    for i, step in enumerate(spec.steps):
        if step.callback_url:
            yield (*loc, "steps", i, "callback_url"), step.callback_url
        if step.workflow is not None:
            yield from _callback_urls(step.workflow, (*loc, "steps", i, "workflow"))


def _under_reference(task: Any, loc: list[Any]) -> bool:
    """True when ``loc`` in ``task`` passes through a string holding ``${``."""
    value = task
    for part in loc:
        if isinstance(value, str):
            break
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and isinstance(part, int) and 0 <= part < len(value):
            value = value[part]
        else:
            return False
    return isinstance(value, str) and "${" in value
