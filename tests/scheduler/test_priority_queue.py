"""The pure queue: FIFO within a priority, aging, shape buckets, reservation."""

from __future__ import annotations

from open_autoglm.scheduler.priority_queue import AgingPriorityQueue

SMALL = (1.0, 0, 0)
BIG = (4.0, 0, 0)


def drain(q, fits=lambda s: True, now=0.0):
    out = []
    while (e := q.pop_fitting(fits, now)) is not None:
        out.append(e.task_id)
    return out


def test_fifo_within_priority_and_higher_first():
    q = AgingPriorityQueue(aging_s=1000)
    for i, p in enumerate([1, 5, 1, 9, 5]):
        q.push(f"t{i}", p, SMALL, None, now=float(i))
    assert drain(q) == ["t3", "t1", "t4", "t0", "t2"]


def test_aging_lets_old_low_priority_overtake_new_high_priority():
    q = AgingPriorityQueue(aging_s=1.0)
    q.push("old-p0", 0, SMALL, None, now=0.0)
    q.push("new-p9-early", 9, SMALL, None, now=8.0)  # 0 + 9*1 > 8: still ahead
    q.push("new-p9-late", 9, SMALL, None, now=10.0)  # arrived after 9 s of aging
    assert drain(q) == ["new-p9-early", "old-p0", "new-p9-late"]


def test_remove_and_depth():
    q = AgingPriorityQueue()
    q.push("a", 2, SMALL, None, 0)
    q.push("b", 2, SMALL, None, 1)
    assert q.depth_by_priority()[2] == 2
    assert q.remove("a") is None and "a" not in q
    assert q.depth_by_priority()[2] == 1
    assert drain(q) == ["b"]


def test_small_tasks_backfill_until_big_head_starves():
    q = AgingPriorityQueue(aging_s=100, reserve_after_s=5)
    q.push("big", 9, BIG, None, now=0.0)
    q.push("small", 1, SMALL, None, now=0.0)
    fits_small_only = lambda s: s[0] <= 2  # noqa: E731
    # Early: the big head cannot fit, a small task may use the free room.
    assert q.pop_fitting(fits_small_only, now=1.0).task_id == "small"
    q.push("small2", 1, SMALL, None, now=1.0)
    # Later: the big task has waited past reserve_after_s, nobody jumps it.
    assert q.pop_fitting(fits_small_only, now=10.0) is None
    assert q.pop_fitting(lambda s: True, now=10.0).task_id == "big"
