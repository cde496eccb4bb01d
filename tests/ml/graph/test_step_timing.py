"""The wall-clock breakdown: straggler wait and transfer split per all-reduce, phases add up."""

from __future__ import annotations

import pytest

from open_autoglm.ml.graph.step_timing import PHASES, WorkerClock, breakdown


def test_allreduce_splits_into_wait_and_transfer() -> None:
    # step 0: rank 1 arrives 2 s late; step 1: rank 0 is late by 1 s; each transfer takes 0.5 s
    fast = WorkerClock(0, sample=1.0, step=10.0, barrier=0.5, snapshot=0.25, first=2.0, last=16.0)
    fast.cpu = 10.0  # 14 s span - 3.5 s in collectives: 0.5 s descheduled
    fast.arrive, fast.done = [3.0, 9.0], [5.5, 9.5]
    slow = WorkerClock(1, sample=1.0, step=8.0, barrier=0.25, first=2.5, last=16.0)
    slow.arrive, slow.done = [5.0, 8.0], [5.5, 9.5]
    rows = breakdown([fast, slow], started=1.0)
    assert [r["rank"] for r in rows] == [0.0, 1.0]
    r0, r1 = rows
    assert r0["straggler_wait"] == pytest.approx(2.0) and r1["straggler_wait"] == pytest.approx(1.0)
    assert r0["allreduce"] == pytest.approx(1.0) and r1["allreduce"] == pytest.approx(1.0)
    assert r0["compute"] == pytest.approx(10.0 - 2.0 - 1.0)
    assert r0["startup"] == pytest.approx(1.0) and r1["startup"] == pytest.approx(1.5)
    for r in rows:
        assert sum(r[p] for p in PHASES if p != "startup") == pytest.approx(r["span"])
    assert r0["preempted"] == pytest.approx(0.5)


def test_async_clocks_have_no_collectives() -> None:
    c = WorkerClock(0, seen=640, sample=0.5, step=2.0, first=1.0, last=4.0)
    (row,) = breakdown([c], started=0.0)
    assert row["allreduce"] == row["straggler_wait"] == 0.0
    assert row["compute"] == 2.0 and row["other"] == pytest.approx(0.5)
    assert c.busy == 2.5
