from __future__ import annotations

import asyncio
import threading
import time

import pytest

from open_autoglm.errors import AdmissionError, BulkheadFullError
from open_autoglm.resilience.bulkhead import Bulkhead


def test_limit_admits_then_refuses_without_a_line() -> None:
    # A long wait is allowed but nobody may wait: a refusal that waited would take 30 s and
    # say "waited 30 s"; refused at the door, it says so and comes back at once.
    b = Bulkhead("m", 2, max_wait_s=30)
    b.enter()
    b.enter()
    start = time.monotonic()
    with pytest.raises(BulkheadFullError, match="no calls may wait") as info:
        b.enter()
    assert time.monotonic() - start < 15  # not the 30 s wait
    assert isinstance(info.value, AdmissionError) and info.value.code == "bulkhead_full"
    assert "'m'" in info.value.message and "2 of 2 in flight" in info.value.message
    assert info.value.retry_after >= 1
    assert not b.try_enter()
    b.leave()
    assert b.try_enter()
    assert b.stats() == {
        "limit": 2,
        "in_flight": 2,
        "waiting": 0,
        "max_waiting": 0,
        "admitted": 3,
        "waited": 0,
        "rejected": 1,
        "peak_in_flight": 2,
    }


@pytest.mark.parametrize("kw", [{"limit": 0}, {"limit": 1, "max_waiting": -1}])
def test_bad_bounds_are_refused(kw: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="must be >= "):
        Bulkhead("m", **kw)  # type: ignore[arg-type]


def test_waiters_get_slots_first_come_first_in() -> None:
    b = Bulkhead("m", 1, max_waiting=3, max_wait_s=10)
    b.enter()
    order: list[int] = []

    def call(i: int) -> None:
        with b.slot():
            order.append(i)

    threads = []
    for i in range(3):
        t = threading.Thread(target=call, args=(i,))
        t.start()
        threads.append(t)
        while b.stats()["waiting"] < i + 1:  # queue them in a known order
            time.sleep(0.001)
    # A newcomer finds the line non-empty: it may not overtake, even when a slot frees.
    assert not b.try_enter()
    with pytest.raises(BulkheadFullError, match="line is full"):
        b.enter()
    b.leave()
    for t in threads:
        t.join(5)
    assert order == [0, 1, 2]
    s = b.stats()
    assert (s["in_flight"], s["waiting"], s["waited"], s["rejected"]) == (0, 0, 3, 1)


def test_a_waiter_is_refused_after_its_wait_and_leaves_the_line() -> None:
    b = Bulkhead("m", 1, max_waiting=1, max_wait_s=0.05)
    b.enter()  # held until after the refusal: only the wait running out can end it
    start = time.monotonic()
    with pytest.raises(BulkheadFullError, match=r"waited 0.05 s"):
        b.enter()
    assert time.monotonic() - start >= 0.04  # it did wait (load only makes this longer)
    assert b.stats()["waiting"] == 0
    b.leave()  # nobody waits now: the slot goes back to the compartment
    assert b.stats()["in_flight"] == 0 and b.try_enter()


def test_coroutines_and_threads_share_the_slots() -> None:
    b = Bulkhead("m", 1, max_waiting=2, max_wait_s=10)

    async def main() -> list[str]:
        seen: list[str] = []
        b.enter()  # a worker thread holds the only slot
        async with asyncio.timeout(5):

            async def coro() -> None:
                async with b.aslot():
                    seen.append("coroutine")

            task = asyncio.create_task(coro())
            while b.stats()["waiting"] < 1:
                await asyncio.sleep(0.001)
            # The event loop is not blocked while the coroutine waits.
            await asyncio.sleep(0.01)
            assert seen == []
            threading.Thread(target=b.leave).start()  # released from another thread
            await task
        return seen

    assert asyncio.run(main()) == ["coroutine"]
    assert b.stats()["in_flight"] == 0 and b.stats()["waited"] == 1


def test_a_cancelled_waiter_gives_its_place_and_its_slot_back() -> None:
    b = Bulkhead("m", 1, max_waiting=2, max_wait_s=10)

    async def main() -> None:
        await b.enter_async()
        cancelled = asyncio.create_task(b.enter_async())
        second = asyncio.create_task(b.enter_async())
        while b.stats()["waiting"] < 2:
            await asyncio.sleep(0.001)
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        assert b.stats()["waiting"] == 1  # left the line
        b.leave()
        await asyncio.wait_for(second, 5)  # the slot went to the next in line
        assert b.stats()["in_flight"] == 1
        b.leave()

    asyncio.run(main())
    assert b.stats()["in_flight"] == 0


def test_async_wait_times_out_with_a_refusal() -> None:
    b = Bulkhead("m", 1, max_waiting=1, max_wait_s=0.05)

    async def main() -> None:
        await b.enter_async()
        with pytest.raises(BulkheadFullError, match="waited"):
            await b.enter_async()
        assert b.stats()["waiting"] == 0
        b.leave()

    asyncio.run(main())
    assert b.stats()["in_flight"] == 0 and b.stats()["rejected"] == 1


def test_never_more_than_limit_inside_under_contention() -> None:
    b = Bulkhead("m", 3, max_waiting=64, max_wait_s=10)
    inside, peak, lock = [0], [0], threading.Lock()

    def call() -> None:
        for _ in range(50):
            with b.slot():
                with lock:
                    inside[0] += 1
                    peak[0] = max(peak[0], inside[0])
                time.sleep(0.0002)
                with lock:
                    inside[0] -= 1

    threads = [threading.Thread(target=call) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    s = b.stats()
    assert peak[0] == s["peak_in_flight"] == 3
    assert (s["in_flight"], s["waiting"], s["admitted"], s["rejected"]) == (0, 0, 600, 0)
