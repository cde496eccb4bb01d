"""Loaded models kept within a memory budget, with leases so one in use is never evicted.

``with cache.lease(name) as model:`` loads ``name`` through the loader callback on first use
(once, even when many threads ask at the same time), pins it while the block runs, and after
that lets least-recently-used unpinned models go when the total exceeds the budget. Models are
plain objects here: the cache knows only a name, a loader and a size function, so it is unit
tested with fake objects as well as real models.

If every other model is leased, a newly loaded one may push the total over budget for a while;
the excess is reclaimed as leases end, and ``stats()["over_budget"]`` shows it meanwhile.
"""

from __future__ import annotations

import enum
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from open_autoglm.errors import UnavailableError, ValidationError

__all__ = ["ModelCache", "ModelState", "memory_bytes_of"]

T = TypeVar("T")


class ModelState(enum.StrEnum):
    LOADING = "loading"
    LOADED = "loaded"


def memory_bytes_of(model: Any) -> int:
    """Default size function: the object's ``memory_bytes`` attribute (0 when it has none)."""
    return int(getattr(model, "memory_bytes", 0) or 0)


def _close(model: Any) -> None:
    close = getattr(model, "close", None)
    if callable(close):
        close()


@dataclass
class _Slot(Generic[T]):
    name: str
    state: ModelState
    value: T | None = None
    size: int = 0
    leases: int = 0
    last_used: int = 0
    hits: int = 0
    load_seconds: float = 0.0


class ModelCache(Generic[T]):
    """Thread-safe LRU cache of loaded models under a byte budget.

    Args:
        loader: ``loader(name) -> model``; may raise (nothing is cached then).
        budget_bytes: total bytes of loaded models to aim for.
        size_of: ``size_of(model) -> bytes``; defaults to ``model.memory_bytes``.
        estimate: optional ``estimate(name) -> bytes`` before loading, so room is made first.
        on_evict: called with each evicted model (default: its ``close()`` if it has one).
        clock: seconds, for load timings; injectable for tests.
    """

    def __init__(
        self,
        loader: Callable[[str], T],
        *,
        budget_bytes: int,
        size_of: Callable[[T], int] = memory_bytes_of,
        estimate: Callable[[str], int] | None = None,
        on_evict: Callable[[T], None] = _close,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        if budget_bytes <= 0:
            raise ValidationError("model cache budget_bytes must be > 0")
        self._loader = loader
        self.budget_bytes = budget_bytes
        self._size_of = size_of
        self._estimate = estimate
        self._on_evict = on_evict
        self._clock = clock
        self._slots: dict[str, _Slot[T]] = {}
        self._cond = threading.Condition()
        self._tick = itertools.count(1)  # LRU order without a clock
        self._hits = self._misses = self._evictions = self._loads = self._failures = 0
        self._load_seconds = 0.0

    # -- leases ------------------------------------------------------------------------------

    @contextmanager
    def lease(self, name: str) -> Iterator[T]:
        """Pin ``name`` (loading it if needed) for the duration of the block."""
        model = self.acquire(name)
        try:
            yield model
        finally:
            self.release(name)

    def acquire(self, name: str) -> T:
        """Load if needed and pin ``name``; every call must be paired with :meth:`release`."""
        with self._cond:
            while True:
                slot = self._slots.get(name)
                if slot is None:
                    slot = _Slot(name=name, state=ModelState.LOADING, leases=1)
                    self._slots[name] = slot
                    self._misses += 1
                    break
                if slot.state is ModelState.LOADING:
                    self._cond.wait()
                    continue
                slot.leases += 1
                slot.hits += 1
                slot.last_used = next(self._tick)
                self._hits += 1
                return slot.value  # type: ignore[return-value]
        return self._load(slot)

    def release(self, name: str) -> None:
        with self._cond:
            slot = self._slots.get(name)
            if slot is None or slot.leases <= 0:
                raise ValidationError(f"model {name!r} is not leased")
            slot.leases -= 1
            evicted = self._evict_over_budget(0)
        self._dispose(evicted)

    def _load(self, slot: _Slot[T]) -> T:
        if self._estimate is not None:
            expected = self._estimate(slot.name)
            with self._cond:
                evicted = self._evict_over_budget(expected)
            self._dispose(evicted)
        start = self._clock()
        try:
            value = self._loader(slot.name)
            size = int(self._size_of(value))
        except BaseException:
            with self._cond:
                del self._slots[slot.name]
                self._failures += 1
                self._cond.notify_all()
            raise
        seconds = self._clock() - start
        if size > self.budget_bytes:
            with self._cond:
                del self._slots[slot.name]
                self._failures += 1
                self._cond.notify_all()
            self._dispose([value])
            raise UnavailableError(
                f"model {slot.name!r} needs {size} bytes, more than the whole model cache "
                f"budget of {self.budget_bytes} bytes; raise the budget or use a smaller dtype"
            )
        with self._cond:
            slot.value, slot.size, slot.load_seconds = value, size, seconds
            slot.state = ModelState.LOADED
            slot.last_used = next(self._tick)
            self._loads += 1
            self._load_seconds += seconds
            evicted = self._evict_over_budget(0)
            self._cond.notify_all()
        self._dispose(evicted)
        return value

    # -- eviction ----------------------------------------------------------------------------

    def _used_bytes(self) -> int:
        return sum(s.size for s in self._slots.values())

    def _evict_over_budget(self, incoming: int) -> list[T]:
        """Drop LRU unpinned models until ``used + incoming`` fits. Caller holds the lock."""
        evicted: list[T] = []
        idle = sorted(
            (s for s in self._slots.values() if s.state is ModelState.LOADED and s.leases == 0),
            key=lambda s: s.last_used,
        )
        used = self._used_bytes()
        for slot in idle:
            if used + incoming <= self.budget_bytes:
                break
            del self._slots[slot.name]
            used -= slot.size
            self._evictions += 1
            evicted.append(slot.value)  # type: ignore[arg-type]
        return evicted

    def _dispose(self, models: list[T]) -> None:
        for model in models:
            self._on_evict(model)

    def evict(self, name: str) -> bool:
        """Evict ``name`` now if it is loaded and not leased; True when it was evicted."""
        with self._cond:
            slot = self._slots.get(name)
            if slot is None or slot.state is not ModelState.LOADED or slot.leases:
                return False
            del self._slots[name]
            self._evictions += 1
        self._dispose([slot.value])  # type: ignore[list-item]
        return True

    def clear(self) -> None:
        """Evict every model that is not leased."""
        for name in list(self.loaded()):
            self.evict(name)

    # -- introspection -----------------------------------------------------------------------

    def loaded(self) -> list[str]:
        with self._cond:
            return [n for n, s in self._slots.items() if s.state is ModelState.LOADED]

    def state(self, name: str) -> ModelState | None:
        with self._cond:
            slot = self._slots.get(name)
            return slot.state if slot else None

    def stats(self) -> dict[str, Any]:
        with self._cond:
            used = self._used_bytes()
            return {
                "budget_bytes": self.budget_bytes,
                "used_bytes": used,
                "over_budget": used > self.budget_bytes,
                "hits": self._hits,
                "misses": self._misses,
                "loads": self._loads,
                "load_failures": self._failures,
                "evictions": self._evictions,
                "load_seconds_total": self._load_seconds,
                "models": {
                    name: {
                        "state": slot.state.value,
                        "bytes": slot.size,
                        "leases": slot.leases,
                        "hits": slot.hits,
                        "load_seconds": slot.load_seconds,
                    }
                    for name, slot in self._slots.items()
                },
            }
