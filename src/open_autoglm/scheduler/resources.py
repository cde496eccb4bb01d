"""Resource accounting: executors declare capacity; a task starts only where it fits."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Capacity", "ResourcePool"]

_EPS = 1e-9


@dataclass(frozen=True, slots=True)
class Capacity:
    cpu: float
    memory_mb: int
    gpu: int

    def as_dict(self) -> dict[str, float]:
        return {"cpu": self.cpu, "memory_mb": float(self.memory_mb), "gpu": float(self.gpu)}


class ResourcePool:
    """Capacity and current use of each executor, by executor name. Not thread-safe."""

    def __init__(self) -> None:
        self._capacity: dict[str, Capacity] = {}
        self._used: dict[str, list[float]] = {}
        self._ever: dict[tuple[float, int, int], bool] = {}

    def add(self, name: str, capacity: Capacity) -> None:
        self._capacity[name] = capacity
        self._used[name] = [0.0, 0.0, 0.0]
        self._ever.clear()

    def __bool__(self) -> bool:
        return bool(self._capacity)

    def could_ever_fit(self, shape: tuple[float, int, int]) -> bool:
        """True if some executor, empty, could hold ``shape`` (memoised: checked per submit)."""
        ever = self._ever.get(shape)
        if ever is None:
            ever = any(self._fits_in(c, [0.0, 0.0, 0.0], shape) for c in self._capacity.values())
            self._ever[shape] = ever
        return ever

    def place(self, shape: tuple[float, int, int], extra_cpu: float = 0.0) -> str | None:
        """The first executor where ``shape`` fits now, or None.

        ``extra_cpu``: CPUs the caller may use beyond an executor's capacity (the room
        reserved for online work, which jobs never take).
        """
        for name, cap in self._capacity.items():
            if self._fits_in(cap, self._used[name], shape, extra_cpu):
                return name
        return None

    def acquire(self, name: str, shape: tuple[float, int, int]) -> None:
        used = self._used[name]
        used[0] += shape[0]
        used[1] += shape[1]
        used[2] += shape[2]

    def release(self, name: str, shape: tuple[float, int, int]) -> None:
        used = self._used[name]
        used[0] = max(0.0, used[0] - shape[0])
        used[1] = max(0.0, used[1] - shape[1])
        used[2] = max(0.0, used[2] - shape[2])

    def utilization(self) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for name, cap in self._capacity.items():
            used = self._used[name]
            out[name] = {
                "cpu": used[0] / cap.cpu if cap.cpu else 0.0,
                "memory": used[1] / cap.memory_mb if cap.memory_mb else 0.0,
                "gpu": used[2] / cap.gpu if cap.gpu else 0.0,
            }
        return out

    @staticmethod
    def _fits_in(
        cap: Capacity, used: list[float], shape: tuple[float, int, int], extra_cpu: float = 0.0
    ) -> bool:
        return (
            used[0] + shape[0] <= cap.cpu + extra_cpu + _EPS
            and used[1] + shape[1] <= cap.memory_mb
            and used[2] + shape[2] <= cap.gpu
        )
