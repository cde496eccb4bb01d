"""A bulkhead: at most ``limit`` calls inside a compartment at once, a bounded line at the door.

A slow dependency holds whatever calls it: without a bound, one upstream that answers in 30 s
instead of 0.3 s ends up holding every worker thread and connection the server has, and the
models that are fine stop being served too. A :class:`Bulkhead` per dependency caps what it
can hold. A call that finds the compartment full waits in line (first come, first in) for at
most ``max_wait_s``; with ``max_waiting`` already in line, or after the wait, it is refused
at once with :class:`~open_autoglm.errors.BulkheadFullError` (429, ``Retry-After``), so the
caller learns in microseconds, not after its own timeout.

    enter -> inside < limit and nobody in line ---------> inside
    enter -> full, fewer than max_waiting in line ------> waits -> a leaving call hands it
                                                          its slot -> inside
                                                       -> max_wait_s passes -> refused
    enter -> full, max_waiting in line (or no wait) ----> refused

A leaving call hands its slot straight to the oldest waiter, so a newcomer never overtakes
the line. Threads (:meth:`Bulkhead.slot`) and coroutines (:meth:`Bulkhead.aslot`) share the
same slots: an upstream is called from worker threads (task handlers) and from the event loop
(the OpenAI routes) alike. One lock guards the counts; the object starts no threads.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

from open_autoglm.errors import BulkheadFullError

__all__ = ["Bulkhead"]


class _Waiter:
    __slots__ = ("granted", "wake")

    def __init__(self, wake: Callable[[], None]) -> None:
        self.granted = False  # set, under the lock, by the call that hands over its slot
        self.wake = wake


class Bulkhead:
    """At most ``limit`` calls inside at once; up to ``max_waiting`` more wait in line.

    Args:
        name: what the compartment guards, for error messages (a model name).
        limit: calls allowed inside at once (>= 1).
        max_waiting: calls allowed to wait in line for a slot (>= 0; 0 refuses at once).
        max_wait_s: how long a call waits in line before it is refused (>= 0).
    """

    def __init__(
        self, name: str, limit: int, *, max_waiting: int = 0, max_wait_s: float = 0.0
    ) -> None:
        if limit < 1:
            raise ValueError(f"bulkhead limit must be >= 1, got {limit}")
        if max_waiting < 0 or max_wait_s < 0:
            raise ValueError("bulkhead max_waiting and max_wait_s must be >= 0")
        self.name = name
        self.limit = limit
        self.max_waiting = max_waiting
        self.max_wait_s = max_wait_s
        self._lock = threading.Lock()
        self._inside = 0
        self._line: deque[_Waiter] = deque()
        self.admitted = 0
        self.waited = 0
        self.rejected = 0
        self.peak = 0

    # -- the core: decisions under the lock ----------------------------------------------------

    def _try_enter_locked(self) -> bool:
        if self._inside < self.limit and not self._line:
            self._inside += 1
            self.admitted += 1
            self.peak = max(self.peak, self._inside)
            return True
        return False

    def _refuse_locked(self, why: str) -> BulkheadFullError:
        self.rejected += 1
        return BulkheadFullError(
            f"too many concurrent calls for {self.name!r}: {self._inside} of {self.limit} "
            f"in flight, {len(self._line)} waiting; {why}",
            retry_after=1.0,
        )

    def _queue_locked(self, wake: Callable[[], None]) -> _Waiter:
        """A place in line, or the refusal to raise when there is none."""
        if len(self._line) >= self.max_waiting or self.max_wait_s <= 0:
            raise self._refuse_locked(
                f"the line is full ({self.max_waiting})"
                if self.max_waiting
                else "no calls may wait"
            )
        waiter = _Waiter(wake)
        self._line.append(waiter)
        return waiter

    def _give_up_locked(self, waiter: _Waiter) -> bool:
        """The waiter stops waiting; True if a slot had been handed to it already."""
        if waiter.granted:
            return True
        self._line.remove(waiter)
        return False

    def try_enter(self) -> bool:
        """Take a slot if one is free and nobody waits; never waits, never raises."""
        with self._lock:
            return self._try_enter_locked()

    def leave(self) -> None:
        """Give the slot back: to the oldest waiter if any, else to the compartment."""
        with self._lock:
            if not self._line:
                self._inside -= 1
                return
            waiter = self._line.popleft()  # those who gave up have left the line already
            waiter.granted = True
            self.admitted += 1
            self.waited += 1
        waiter.wake()

    # -- the shells: threads and coroutines ----------------------------------------------------

    def enter(self) -> None:
        """Take a slot, waiting in line up to ``max_wait_s``; raise BulkheadFullError if not."""
        with self._lock:
            if self._try_enter_locked():
                return
            event = threading.Event()
            waiter = self._queue_locked(event.set)
        if event.wait(self.max_wait_s):
            return
        with self._lock:
            if self._give_up_locked(waiter):  # handed a slot as the wait ran out: keep it
                return
            raise self._refuse_locked(f"waited {self.max_wait_s:g} s for a slot")

    async def enter_async(self) -> None:
        """:meth:`enter` for a coroutine: waits without blocking the event loop."""
        loop = asyncio.get_running_loop()
        granted: asyncio.Future[None] = loop.create_future()

        def wake() -> None:  # called by whichever thread leaves
            try:
                loop.call_soon_threadsafe(_resolve, granted)
            except RuntimeError:  # the loop is closed: nobody will take the slot, pass it on
                self.leave()

        with self._lock:
            if self._try_enter_locked():
                return
            waiter = self._queue_locked(wake)
        try:
            await asyncio.wait_for(asyncio.shield(granted), self.max_wait_s)
            return
        except TimeoutError:
            with self._lock:
                if self._give_up_locked(waiter):
                    return
                raise self._refuse_locked(f"waited {self.max_wait_s:g} s for a slot") from None
        except asyncio.CancelledError:
            with self._lock:
                had_slot = self._give_up_locked(waiter)
            if had_slot:  # the caller is gone: pass the slot on
                self.leave()
            raise

    @contextmanager
    def slot(self) -> Iterator[None]:
        self.enter()
        try:
            yield
        finally:
            self.leave()

    @asynccontextmanager
    async def aslot(self) -> AsyncIterator[None]:
        await self.enter_async()
        try:
            yield
        finally:
            self.leave()

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "limit": self.limit,
                "in_flight": self._inside,
                "waiting": len(self._line),
                "max_waiting": self.max_waiting,
                "admitted": self.admitted,
                "waited": self.waited,
                "rejected": self.rejected,
                "peak_in_flight": self.peak,
            }


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
