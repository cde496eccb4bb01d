"""A background thread that drives one :class:`DecodeBatch` for many concurrent callers.

Callers ``submit`` requests from any thread and get a ``Future``; between decode steps the
thread admits waiting requests into the running batch (continuous batching), so a newcomer
never waits for the whole batch to finish. The decode logic itself is the pure
:class:`~open_autoglm.ml.text.decode_batch.DecodeBatch`; this module only adds the thread.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Future
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from open_autoglm.errors import TaskCancelledError, UnavailableError
from open_autoglm.ml.text.decode_batch import GenerationRequest, GenerationResult

if TYPE_CHECKING:
    from open_autoglm.ml.text.generation import Generator

__all__ = ["GenerationEngine"]


class GenerationEngine:
    """Continuous-batching front for a :class:`Generator`; the thread starts on first submit."""

    def __init__(self, generator: Generator, *, max_batch_size: int | None = None) -> None:
        self._generator = generator
        self._max_batch_size = max_batch_size or generator.max_batch_size
        self._pending: deque[tuple[GenerationRequest, Future[GenerationResult]]] = deque()
        self._wakeup = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._to_cancel: set[Future[GenerationResult]] = set()
        self.steps = 0  # decode steps run; with prefills, what tests and metrics look at
        self.max_active = 0  # largest batch seen
        self.active = 0  # sequences in the batch after the last step (freed ones excluded)

    def submit(self, request: GenerationRequest) -> Future[GenerationResult]:
        future: Future[GenerationResult] = Future()
        with self._wakeup:
            if self._closed:
                raise UnavailableError("generation engine is closed")
            self._pending.append((request, future))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="autoglm-generation", daemon=True
                )
                self._thread.start()
            self._wakeup.notify()
        return future

    def cancel(self, future: Future[GenerationResult]) -> None:
        """Stop a submitted request: dropped if still waiting, else removed between steps.

        The future then raises :class:`~open_autoglm.errors.TaskCancelledError`.
        """
        with self._wakeup:
            for i, (_, pending) in enumerate(self._pending):
                if pending is future:
                    del self._pending[i]
                    future.set_exception(TaskCancelledError("generation cancelled"))
                    return
            if not future.done():
                self._to_cancel.add(future)
                self._wakeup.notify()

    def stream(self, request: GenerationRequest) -> Iterator[str]:
        """Submit ``request`` and yield its text deltas as they are decoded (blocking)."""
        deltas: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        future = self.submit(replace(request, on_delta=_chain(request.on_delta, deltas.put)))
        future.add_done_callback(lambda _: deltas.put(None))
        while (delta := deltas.get()) is not None:
            yield delta
        future.result()  # re-raise a failure after the deltas that did arrive

    async def astream(self, request: GenerationRequest) -> AsyncIterator[str]:
        """Async version of :meth:`stream` for SSE handlers; never blocks the event loop."""
        loop = asyncio.get_running_loop()
        deltas: asyncio.Queue[str | None] = asyncio.Queue()

        def put(item: str | None) -> None:
            loop.call_soon_threadsafe(deltas.put_nowait, item)

        future = self.submit(replace(request, on_delta=_chain(request.on_delta, put)))
        future.add_done_callback(lambda _: put(None))
        while (delta := await deltas.get()) is not None:
            yield delta
        await asyncio.wrap_future(future)

    def close(self, timeout: float = 10.0) -> None:
        """Stop admitting, finish nothing further, fail what is waiting, join the thread."""
        with self._wakeup:
            self._closed = True
            self._wakeup.notify()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def _run(self) -> None:
        batch = self._generator.new_batch()
        batch.max_batch_size = self._max_batch_size
        futures: dict[int, Future[GenerationResult]] = {}
        while True:
            with self._wakeup:
                while (
                    not self._pending
                    and not batch.active
                    and not self._closed
                    and not self._to_cancel
                ):
                    self._wakeup.wait()
                if self._closed:
                    self._fail_all(list(futures.values()) + [f for _, f in self._pending])
                    self._pending.clear()
                    return
                joining = [
                    self._pending.popleft()
                    for _ in range(min(batch.free_slots, len(self._pending)))
                ]
                to_cancel, self._to_cancel = self._to_cancel, set()
            if to_cancel:
                ids = {seq_id for seq_id, f in futures.items() if f in to_cancel}
                cancelled = batch.cancel(ids)
                self.active = batch.active
                for seq_id in cancelled:
                    futures.pop(seq_id).set_exception(TaskCancelledError("generation cancelled"))
                batch.pop_finished()  # the cancelled rows' partial results are not wanted
            try:
                if joining:
                    self._admit(batch, joining, futures)
                else:
                    batch.step()
                    self.steps += 1
            except Exception as exc:  # a failed forward fails every request in the batch
                self._fail_all(list(futures.values()), exc)
                futures.clear()
                batch = self._generator.new_batch()
                batch.max_batch_size = self._max_batch_size
                continue
            self.active = batch.active
            self.max_active = max(self.max_active, batch.active)
            for seq_id, result in batch.pop_finished():
                futures.pop(seq_id).set_result(result)

    def _admit(
        self,
        batch: Any,
        joining: list[tuple[GenerationRequest, Future[GenerationResult]]],
        futures: dict[int, Future[GenerationResult]],
    ) -> None:
        # Validate one by one so a bad request (too long, ...) fails alone, then prefill the
        # valid ones together.
        valid: list[tuple[GenerationRequest, Future[GenerationResult]]] = []
        for request, future in joining:
            if not future.set_running_or_notify_cancel():
                continue
            try:
                batch.validate(request)
            except Exception as exc:
                future.set_exception(exc)
                continue
            valid.append((request, future))
        if valid:
            seq_ids = batch.add([r for r, _ in valid])
            futures.update(zip(seq_ids, (f for _, f in valid), strict=True))

    @staticmethod
    def _fail_all(
        futures: list[Future[GenerationResult]], exc: BaseException | None = None
    ) -> None:
        error = exc or UnavailableError("generation engine closed")
        for future in futures:
            if not future.done():
                future.set_exception(error)


def _chain(
    first: Callable[[str], None] | None, then: Callable[[str], None]
) -> Callable[[str], None]:
    if first is None:
        return then

    def both(delta: str) -> None:
        first(delta)
        then(delta)

    return both
