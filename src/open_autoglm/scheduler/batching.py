"""Dynamic batching: which queued tasks may share one execution.

Tasks whose type has a ``batch_handler`` are grouped by (task type, model, the params named in
the type's ``batch_key``). When the dispatcher pops such a task it takes the best-ranked
members of its group (highest priority first, the queue's own order) up to the model's
``max_batch_size``. A group smaller than that may be held back for at most ``max_wait_s``
after its head arrived, so that a lightly loaded server still fills batches; under load,
batches fill by themselves while the previous one runs.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from open_autoglm.scheduler.live_task import LiveTask

__all__ = ["BatchGroups", "BatchPolicy", "BatchRun", "batch_key"]

# (task_type, model) -> (max_batch_size, max_wait_s)
BatchPolicy = Callable[[str, str | None], tuple[int, float]]

DEFAULT_POLICY: tuple[int, float] = (32, 0.002)


def batch_key(lt: LiveTask) -> tuple[Hashable, ...]:
    params = lt.params
    values = tuple(_hashable(getattr(params, name, None)) for name in lt.task_type.batch_key)
    return (lt.spec.task_type, lt.spec.model, values)


def _hashable(value: Any) -> Hashable:
    if isinstance(value, list | tuple):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    return value  # type: ignore[no-any-return]


class BatchGroups:
    """Queued batchable tasks by group key. Not thread-safe (the scheduler's lock guards it)."""

    def __init__(self) -> None:
        self._groups: dict[tuple[Hashable, ...], dict[str, LiveTask]] = {}

    def add(self, lt: LiveTask) -> None:
        self._groups.setdefault(batch_key(lt), {})[lt.id] = lt

    def discard(self, lt: LiveTask) -> None:
        key = batch_key(lt)
        group = self._groups.get(key)
        if group is not None:
            group.pop(lt.id, None)
            if not group:
                del self._groups[key]

    def size(self, lt: LiveTask) -> int:
        return len(self._groups.get(batch_key(lt), ()))

    def best(self, lt: LiveTask, n: int, rank: Callable[[LiveTask], float]) -> list[LiveTask]:
        """Up to ``n`` other members of ``lt``'s group, best ranked first."""
        group = self._groups.get(batch_key(lt), {})
        others = [m for m in group.values() if m is not lt]
        others.sort(key=rank)
        return others[:n]


@dataclass(eq=False)
class BatchRun:
    """Members of one running batch share one resource allocation, freed by the last."""

    executor: str
    shape: tuple[float, int, int]
    remaining: int
    members: list[str] = field(default_factory=list)
