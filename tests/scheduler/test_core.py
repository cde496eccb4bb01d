"""The scheduler core on a simulated clock: no threads, no storage, no sleeps.

Each test feeds typed events and times to :class:`SchedulerCore` and checks the instructions
it answers with, so priorities, aging, deadlines, retries, batching and the room reserved
for online work are decided the same way on every machine.
"""

from __future__ import annotations

from typing import Any

import pytest

from helpers.clock import FakeClock
from open_autoglm.errors import ConflictError
from open_autoglm.executors.base import Outcome, OutcomeStatus
from open_autoglm.scheduler.core import FORCE_TIMEOUT_GRACE_S, TRANSITIONS, SchedulerCore
from open_autoglm.scheduler.events import (
    CancelRequested,
    Enqueued,
    Finish,
    Instruction,
    JobEnded,
    Requeue,
    Start,
    Stop,
    StopSignal,
    TakenOver,
    TaskArrived,
    TimerKind,
)
from open_autoglm.scheduler.live_task import LiveTask
from open_autoglm.scheduler.resources import Capacity
from open_autoglm.scheduler.transitions import ALLOWED
from open_autoglm.spec.task import TaskSpec, TaskStatus
from open_autoglm.tasks.base import TaskType


def _handler(ctx: Any) -> None:
    return None


PLAIN = TaskType(name="plain", handler=_handler)
BATCHED = TaskType(name="batched", handler=_handler, batch_handler=lambda ctxs: [None] * len(ctxs))


class Sim:
    """A core, a fake clock and helpers to make tasks and read what started."""

    def __init__(self, cpu: float = 1.0, **kw: Any) -> None:
        self.clock = FakeClock(0.0)
        self.core = SchedulerCore(**kw)
        self.core.add_executor("local", Capacity(cpu=cpu, memory_mb=1 << 20, gpu=0))
        self.n = 0

    def task(
        self,
        priority: int = 5,
        *,
        cpu: float = 1.0,
        durable: bool = True,
        ttype: TaskType = PLAIN,
        **spec: Any,
    ) -> LiveTask:
        self.n += 1
        return LiveTask(
            id=f"t{self.n}",
            spec=TaskSpec.model_validate({"task_type": ttype.name, "priority": priority, **spec}),
            task_type=ttype,
            params=None,
            status=TaskStatus.QUEUED,
            attempts=0,
            created_at=self.clock(),
            shape=(cpu, 0, 0),
            durable=durable,
        )

    def arrive(self, *tasks: LiveTask) -> list[Instruction]:
        out: list[Instruction] = []
        for lt in tasks:
            self.core.handle(TaskArrived(lt), self.clock(), out)
        return out

    def step(self) -> list[Instruction]:
        return self.core.advance(self.clock())

    def end(self, lt: LiveTask, outcome: Outcome) -> list[Instruction]:
        return self.core.handle(JobEnded(lt.id, outcome), self.clock())


def started(out: list[Instruction]) -> list[str]:
    return [lt.id for ins in out if isinstance(ins, Start) for lt in ins.tasks]


OK = Outcome(OutcomeStatus.SUCCEEDED, result=1)
FLAKY = Outcome(OutcomeStatus.FAILED, error={"code": "x", "message": "flaky"}, retryable=True)


def test_transition_table_is_the_allowed_set() -> None:
    assert set(TRANSITIONS) == ALLOWED
    sim = Sim()
    lt = sim.task()
    lt.status = TaskStatus.SUCCEEDED
    with pytest.raises(ConflictError, match="from succeeded to running"):
        sim.core._transition(lt, TaskStatus.RUNNING, 0.0, {"executor": "local"}, [])


def test_arrival_is_enqueued_then_started_where_it_fits() -> None:
    sim = Sim(cpu=1)
    a, b = sim.task(), sim.task()
    out = sim.arrive(a, b)
    assert [type(i) for i in out] == [Enqueued, Enqueued]
    assert started(sim.step()) == [a.id]  # one CPU: b waits
    assert a.status is TaskStatus.RUNNING and a.attempts == 1 and a.executor == "local"
    assert started(sim.step()) == []
    out = sim.end(a, OK)
    assert [type(i) for i in out] == [Finish] and a.status is TaskStatus.SUCCEEDED
    assert started(sim.step()) == [b.id]  # a's slot came back


def test_higher_priority_starts_first_under_saturation() -> None:
    sim = Sim(cpu=1, aging_s=600)
    busy = sim.task()
    sim.arrive(busy)
    sim.step()
    low = [sim.task(1) for _ in range(3)]
    high = [sim.task(9) for _ in range(2)]
    sim.arrive(*low, *high)
    order = []
    running = busy
    for _ in range(5):
        sim.end(running, OK)
        (tid,) = started(sim.step())
        running = sim.core.tasks[tid]
        order.append(tid)
    assert order == [h.id for h in high] + [lo.id for lo in low]


def test_aging_lifts_a_waiting_task_past_later_high_priority_ones() -> None:
    sim = Sim(cpu=1, aging_s=10)
    busy = sim.task()
    sim.arrive(busy)
    sim.step()
    low = sim.task(0)
    sim.arrive(low)
    sim.clock.advance(91)  # 9 levels of aging = 90 s: low now ranks above any new priority 9
    late_high = sim.task(9)
    sim.arrive(late_high)
    sim.end(busy, OK)
    assert started(sim.step()) == [low.id]


def test_deadline_asks_to_stop_then_forces_failure_and_keeps_the_slot() -> None:
    sim = Sim(cpu=1)
    lt, other = sim.task(timeout_s=5), sim.task()
    sim.arrive(lt, other)
    sim.step()
    sim.clock.advance(4.9)
    assert sim.step() == []
    sim.clock.advance(0.1)
    out = sim.step()
    assert out == [Stop(lt, StopSignal.TIMEOUT)] and lt.cancel_requested == "timeout"
    sim.clock.advance(FORCE_TIMEOUT_GRACE_S)
    out = sim.step()
    (finish,) = [i for i in out if isinstance(i, Finish)]
    assert finish.task is lt and lt.status is TaskStatus.FAILED
    assert lt.error == {"code": "timeout", "message": "task exceeded its timeout"}
    assert started(out) == []  # the ignored job still holds its CPU
    assert sim.end(lt, Outcome(OutcomeStatus.CANCELLED)) == []  # ended at last: no new state
    assert started(sim.step()) == [other.id]


def test_a_job_ending_in_time_never_times_out() -> None:
    sim = Sim(cpu=1)
    lt = sim.task(timeout_s=5)
    sim.arrive(lt)
    sim.step()
    sim.clock.advance(1)
    sim.end(lt, OK)
    sim.clock.advance(100)
    assert sim.step() == []


def test_retry_waits_an_exponential_backoff() -> None:
    sim = Sim(cpu=1, retry_base_s=0.5)
    lt = sim.task(max_retries=3)
    sim.arrive(lt)
    sim.step()
    delays = []
    for _ in range(3):
        (requeue,) = sim.end(lt, FLAKY)
        assert isinstance(requeue, Requeue) and lt.status is TaskStatus.QUEUED
        delays.append(requeue.delay)
        sim.clock.advance(requeue.delay - 0.01)
        assert started(sim.step()) == []  # still backing off
        sim.clock.advance(0.01)
        assert started(sim.step()) == [lt.id]
    assert delays == [0.5, 1.0, 2.0] and lt.attempts == 4
    (finish,) = sim.end(lt, FLAKY)  # retries spent
    assert isinstance(finish, Finish) and lt.status is TaskStatus.FAILED
    assert lt.error is not None and lt.error["retryable"] is True


def test_cancel_queued_finishes_it_and_cancel_running_stops_it() -> None:
    sim = Sim(cpu=1)
    running, queued = sim.task(), sim.task()
    sim.arrive(running, queued)
    sim.step()
    (finish,) = sim.core.handle(CancelRequested(queued, "no longer needed"), sim.clock())
    assert isinstance(finish, Finish) and queued.status is TaskStatus.CANCELLED
    assert queued.error == {"code": "cancelled", "message": "no longer needed"}
    out = sim.core.handle(CancelRequested(running), sim.clock())
    assert out == [Stop(running, StopSignal.CANCELLED)]
    # Whatever the job reports after that, the task ends cancelled.
    (finish,) = sim.end(running, FLAKY)
    assert isinstance(finish, Finish) and running.status is TaskStatus.CANCELLED
    assert sim.core.queued() == 0 and sim.core.tasks == {}


def test_a_task_cancelled_before_it_was_queued_never_runs() -> None:
    sim = Sim(cpu=1)
    lt = sim.task()
    sim.core.handle(CancelRequested(lt), sim.clock())
    assert sim.arrive(lt) == [] and started(sim.step()) == []


def test_taken_over_drops_the_queued_and_stops_the_running() -> None:
    sim = Sim(cpu=1)
    running, queued = sim.task(), sim.task()
    sim.arrive(running, queued)
    sim.step()
    out = sim.core.handle(TakenOver((running, queued)), sim.clock())
    assert [type(i).__name__ for i in out] == ["Stop", "Dropped"]
    assert sim.core.queued() == 0


def test_a_small_batch_group_is_held_at_most_max_wait() -> None:
    sim = Sim(cpu=1)
    sim.core.batch_policy = lambda task_type, model: (8, 0.3)
    group = [sim.task(ttype=BATCHED) for _ in range(3)]
    sim.arrive(*group)
    assert started(sim.step()) == []
    assert sim.core.timers[0].kind is TimerKind.BATCH
    sim.clock.advance(0.29)
    assert started(sim.step()) == []
    sim.clock.advance(0.01)
    (start,) = [i for i in sim.step() if isinstance(i, Start)]
    assert start.batch and [t.id for t in start.tasks] == [t.id for t in group]
    for t in group:  # one allocation for the batch, freed by its last member
        sim.end(t, OK)
    assert sim.core.pool.utilization()["local"]["cpu"] == 0.0


def test_online_work_never_waits_behind_jobs_for_a_cpu() -> None:
    sim = Sim(cpu=2, online_reserve_cpu=1.0)
    train = [sim.task(9), sim.task(9)]
    sim.arrive(*train)
    assert started(sim.step()) == [t.id for t in train]  # the jobs hold both CPUs
    job = sim.task(9)
    predict = sim.task(0, durable=False)
    sim.arrive(job, predict)
    # The online task starts at once, in the reserved room; the job (higher priority) waits.
    assert started(sim.step()) == [predict.id]
    second = sim.task(0, durable=False)
    sim.arrive(second)
    assert started(sim.step()) == []  # the reserve is one CPU, and it is taken
    sim.end(predict, OK)
    assert started(sim.step()) == [second.id]  # online work goes before the waiting job
    sim.end(train[0], OK)
    sim.end(second, OK)
    assert started(sim.step()) == [job.id]


def test_without_a_reserve_online_work_queues_like_a_job() -> None:
    sim = Sim(cpu=2, online_reserve_cpu=0.0)
    sim.arrive(sim.task(), sim.task())
    sim.step()
    predict = sim.task(durable=False)
    sim.arrive(predict)
    assert started(sim.step()) == []


def test_timers_follow_the_injected_time_only() -> None:
    sim = Sim(cpu=1)
    lt = sim.task(timeout_s=30)
    sim.arrive(lt)
    sim.step()
    assert sim.core.next_timer() == 30.0
    sim.clock.now = 1e9  # any clock the adapter injects: nothing reads the wall
    assert sim.step() == [Stop(lt, StopSignal.TIMEOUT)]
