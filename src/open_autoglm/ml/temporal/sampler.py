"""Temporal neighbour sampling: the events of a node strictly before a query time.

Each event ``(src, dst, t)`` makes ``dst`` a neighbour of ``src`` and ``src`` of ``dst``,
both at time ``t``. The index is one array sorted by (node, time, event id); a query
``(node, t)`` finds, with one binary search per query over an integer key, where that node's
events at times ``< t`` end. Nothing at or after the query time is ever returned, which is
what keeps training and evaluation free of leakage from the future.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["NeighborStrategy", "TemporalNeighborSampler", "TemporalNeighbors"]

IntArray = npt.NDArray[np.int64]


class NeighborStrategy(enum.StrEnum):
    RECENT = "recent"  # the k most recent events before t
    UNIFORM = "uniform"  # k events drawn uniformly (with replacement) from those before t


@dataclass(frozen=True)
class TemporalNeighbors:
    """Sampled neighbours of ``Q`` queries, ``k`` slots each; ``mask`` is False on padding."""

    nodes: IntArray  # (Q, k) neighbour node index (0 where masked)
    times: npt.NDArray[np.float64]  # (Q, k) event time (query time where masked)
    events: IntArray  # (Q, k) event id (0 where masked)
    mask: npt.NDArray[np.bool_]  # (Q, k)


class TemporalNeighborSampler:
    """Neighbour index over a set of events; :meth:`extend` adds events (e.g. appended ones)."""

    def __init__(
        self,
        src: npt.ArrayLike,
        dst: npt.ArrayLike,
        t: npt.ArrayLike,
        num_nodes: int,
        event_ids: npt.ArrayLike | None = None,
    ) -> None:
        self.num_nodes = int(num_nodes)
        s = np.asarray(src, dtype=np.int64)
        self._src, self._dst = s, np.asarray(dst, dtype=np.int64)
        self._t = np.asarray(t, dtype=np.float64)
        self._eid = (
            np.arange(s.size, dtype=np.int64)
            if event_ids is None
            else np.asarray(event_ids, dtype=np.int64)
        )
        self._build()

    def extend(
        self,
        src: npt.ArrayLike,
        dst: npt.ArrayLike,
        t: npt.ArrayLike,
        event_ids: npt.ArrayLike,
        num_nodes: int | None = None,
    ) -> None:
        """Add events and rebuild the index (O(E log E); appends are rare and small)."""
        self._src = np.concatenate([self._src, np.asarray(src, dtype=np.int64)])
        self._dst = np.concatenate([self._dst, np.asarray(dst, dtype=np.int64)])
        self._t = np.concatenate([self._t, np.asarray(t, dtype=np.float64)])
        self._eid = np.concatenate([self._eid, np.asarray(event_ids, dtype=np.int64)])
        if num_nodes is not None:
            self.num_nodes = max(self.num_nodes, int(num_nodes))
        self._build()

    def _build(self) -> None:
        back = self._src != self._dst  # a self-loop is listed once, not twice
        node = np.concatenate([self._src, self._dst[back]])  # (~2E,) whose neighbour this is
        nbr = np.concatenate([self._dst, self._src[back]])
        t = np.concatenate([self._t, self._t[back]])
        eid = np.concatenate([self._eid, self._eid[back]])
        order = np.lexsort((eid, t, node))
        self._node, self._nbr, self._times, self._events = (
            node[order],
            nbr[order],
            t[order],
            eid[order],
        )
        self._unique_t = np.unique(t)
        self._stride = np.int64(self._unique_t.size + 1)
        rank = np.searchsorted(self._unique_t, self._times)
        self._keys = self._node * self._stride + rank  # (2E,) sorted: node-major, then time
        self._starts = np.searchsorted(self._node, np.arange(self.num_nodes + 1))  # (N+1,)

    def before(self, nodes: IntArray, times: npt.NDArray[np.float64]) -> tuple[IntArray, IntArray]:
        """Index range ``[start, end)`` of each query node's events strictly before its time."""
        nodes = np.asarray(nodes, dtype=np.int64)
        inside = (nodes >= 0) & (nodes < self.num_nodes)
        safe = np.where(inside, nodes, 0)
        earlier = np.searchsorted(self._unique_t, np.asarray(times, dtype=np.float64), side="left")
        end = np.searchsorted(self._keys, safe * self._stride + earlier, side="left")
        start = self._starts[np.minimum(safe, self._starts.size - 1)]
        end = np.where(inside, np.maximum(end, start), start)
        return start, end

    def sample(
        self,
        nodes: npt.ArrayLike,
        times: npt.ArrayLike,
        k: int,
        strategy: NeighborStrategy = NeighborStrategy.RECENT,
        rng: np.random.Generator | None = None,
    ) -> TemporalNeighbors:
        """Up to ``k`` neighbours of each ``(node, time)`` query, from events before ``time``."""
        q_nodes = np.asarray(nodes, dtype=np.int64).reshape(-1)  # (Q,)
        q_times = np.asarray(times, dtype=np.float64).reshape(-1)  # (Q,)
        start, end = self.before(q_nodes, q_times)
        count = end - start  # (Q,)
        if strategy is NeighborStrategy.RECENT:
            pos = end[:, None] - k + np.arange(k)[None, :]  # (Q, k) oldest..newest
            mask = pos >= start[:, None]
        else:
            rng = rng or np.random.default_rng(0)
            offs = np.floor(rng.random((q_nodes.size, k)) * np.maximum(count, 1)[:, None])
            pos = start[:, None] + offs.astype(np.int64)  # (Q, k)
            mask = np.broadcast_to(count[:, None] > 0, pos.shape).copy()
        pos = np.where(mask, pos, 0)
        if self._nbr.size == 0:
            mask[:] = False
            zeros = np.zeros_like(pos)
            return TemporalNeighbors(zeros, np.repeat(q_times[:, None], k, 1), zeros, mask)
        return TemporalNeighbors(
            nodes=np.where(mask, self._nbr[pos], 0),
            times=np.where(mask, self._times[pos], q_times[:, None]),
            events=np.where(mask, self._events[pos], 0),
            mask=mask,
        )
