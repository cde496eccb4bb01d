"""Priority queue with aging, FIFO within a priority, and resource-shape buckets.

Aging is folded into a static sort key so the heap never needs re-sorting: a task of
priority ``p`` enqueued at ``t`` sorts at ``t - p * aging_s``. Two tasks of one priority keep
FIFO order; a task waiting ``aging_s`` seconds gains one level, so a priority-0 task queued at
``t`` beats every priority-9 task that arrives after ``t + 9 * aging_s`` (no starvation).

Tasks are bucketed by resource shape (cpu, memory, gpu). ``pop_fitting`` looks only at each
bucket's head, so placement is O(shapes) rather than a scan of the queue. If the best task
overall cannot fit and has waited longer than ``reserve_after_s``, smaller tasks may not
jump it (a reservation), so large tasks do not starve behind a stream of small ones.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

__all__ = ["AgingPriorityQueue", "QueueEntry", "Shape"]

Shape = tuple[float, int, int]  # (cpu, memory_mb, gpu)
T = TypeVar("T")


@dataclass(order=True, slots=True)
class QueueEntry(Generic[T]):
    key: float
    seq: int
    task_id: str = field(compare=False)
    priority: int = field(compare=False)
    enqueued_at: float = field(compare=False)
    shape: Shape = field(compare=False)
    item: T = field(compare=False)
    removed: bool = field(default=False, compare=False)


class AgingPriorityQueue(Generic[T]):
    def __init__(self, *, aging_s: float = 30.0, reserve_after_s: float = 30.0) -> None:
        if aging_s <= 0:
            raise ValueError("aging_s must be positive")
        self.aging_s = aging_s
        self.reserve_after_s = reserve_after_s
        self._buckets: dict[Shape, list[QueueEntry[T]]] = {}
        self._entries: dict[str, QueueEntry[T]] = {}
        self._counter = itertools.count()
        self._by_priority = [0] * 10

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._entries

    def depth_by_priority(self) -> list[int]:
        return list(self._by_priority)

    def push(self, task_id: str, priority: int, shape: Shape, item: T, now: float) -> None:
        if task_id in self._entries:
            raise KeyError(f"task {task_id} is already queued")
        entry = QueueEntry(
            key=now - priority * self.aging_s,
            seq=next(self._counter),
            task_id=task_id,
            priority=priority,
            enqueued_at=now,
            shape=shape,
            item=item,
        )
        heapq.heappush(self._buckets.setdefault(shape, []), entry)
        self._entries[task_id] = entry
        self._by_priority[priority] += 1

    def remove(self, task_id: str) -> T | None:
        """Remove a queued task (lazy deletion); returns its item, or None if absent."""
        entry = self._entries.pop(task_id, None)
        if entry is None:
            return None
        entry.removed = True
        self._by_priority[entry.priority] -= 1
        return entry.item

    def _head(self, shape: Shape) -> QueueEntry[T] | None:
        heap = self._buckets[shape]
        while heap and heap[0].removed:
            heapq.heappop(heap)
        if not heap:
            del self._buckets[shape]
            return None
        return heap[0]

    def heads(self) -> Iterator[QueueEntry[T]]:
        """Each bucket's head, best first."""
        found = [h for s in list(self._buckets) if (h := self._head(s)) is not None]
        return iter(sorted(found))

    def pop_fitting(self, fits: Callable[[Shape], bool], now: float) -> QueueEntry[T] | None:
        """Pop the best queued task whose shape ``fits``; None if nothing may start now."""
        for head in self.heads():
            if fits(head.shape):
                heap = self._buckets[head.shape]
                heapq.heappop(heap)
                del self._entries[head.task_id]
                self._by_priority[head.priority] -= 1
                return head
            if now - head.enqueued_at >= self.reserve_after_s:
                return None  # reservation: the starving head waits for room; nobody jumps it
        return None
