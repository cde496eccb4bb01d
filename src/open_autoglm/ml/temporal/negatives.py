"""Negative edges for evaluation: random, historical and inductive (Poursafaei et al. 2022).

Random negatives keep each positive's source and draw a destination uniformly, which most
models find easy. Historical negatives are pairs that did occur before the batch but not in
it, so a model that only remembers past edges is no longer rewarded; inductive negatives are
pairs first seen after training. As in DyGLib, at most half of a batch's negatives come from
the historical (inductive) pool and the rest are random pairs.
"""

from __future__ import annotations

import enum

import numpy as np
import numpy.typing as npt

__all__ = ["NegativeSampler", "NegativeStrategy"]

IntArray = npt.NDArray[np.int64]


class NegativeStrategy(enum.StrEnum):
    RANDOM = "random"
    HISTORICAL = "historical"
    INDUCTIVE = "inductive"


class NegativeSampler:
    """Draws negatives for chronological batches of one stream; call in time order."""

    def __init__(
        self,
        src: npt.ArrayLike,
        dst: npt.ArrayLike,
        t: npt.ArrayLike,
        last_observed_time: float,
        seed: int = 0,
    ) -> None:
        self._src = np.asarray(src, dtype=np.int64)
        self._dst = np.asarray(dst, dtype=np.int64)
        self._t = np.asarray(t, dtype=np.float64)
        self._width = np.int64(
            max(int(self._src.max(initial=0)), int(self._dst.max(initial=0))) + 1
        )
        self._keys = self._src * self._width + self._dst  # (E,) one int per directed pair
        self.src_pool = np.unique(self._src)
        self.dst_pool = np.unique(self._dst)
        self.last_observed_time = last_observed_time
        self._train = set(self._keys[self._t <= last_observed_time].tolist())
        self.seed = seed
        self.reset()

    def reset(self) -> None:
        """Start a new chronological walk (same seed, same draws)."""
        self.rng = np.random.default_rng(self.seed)
        self._pos = 0
        self._hist: list[int] = []
        self._hist_seen: set[int] = set()
        self._ind: list[int] = []
        self._ind_seen: set[int] = set()

    def _advance(self, t_start: float) -> None:
        end = int(np.searchsorted(self._t, t_start, side="left"))
        if end < self._pos:
            self.reset()
        for k, tt in zip(
            self._keys[self._pos : end].tolist(), self._t[self._pos : end].tolist(), strict=True
        ):
            if k not in self._hist_seen:
                self._hist_seen.add(k)
                self._hist.append(k)
            if tt > self.last_observed_time and k not in self._train and k not in self._ind_seen:
                self._ind_seen.add(k)
                self._ind.append(k)
        self._pos = max(self._pos, end)

    def sample(
        self, strategy: NegativeStrategy, src: IntArray, dst: IntArray, t: npt.NDArray[np.float64]
    ) -> tuple[IntArray, IntArray]:
        """Negative ``(src, dst)`` pairs, one per positive of the batch."""
        size = int(src.size)
        if strategy is NegativeStrategy.RANDOM:
            return src.copy(), self.dst_pool[self.rng.integers(0, self.dst_pool.size, size)]
        self._advance(float(t.min()))
        pool = self._hist if strategy is NegativeStrategy.HISTORICAL else self._ind
        batch = set((src * self._width + dst).tolist())
        picked = self._draw(pool, batch, size // 2)
        n_rand = size - picked.size
        rs = self.src_pool[self.rng.integers(0, self.src_pool.size, n_rand)]
        rd = self.dst_pool[self.rng.integers(0, self.dst_pool.size, n_rand)]
        return (
            np.concatenate([picked // self._width, rs]).astype(np.int64),
            np.concatenate([picked % self._width, rd]).astype(np.int64),
        )

    def _draw(self, pool: list[int], exclude: set[int], want: int) -> IntArray:
        """Up to ``want`` distinct keys of ``pool`` not in ``exclude``."""
        if not pool or want == 0:
            return np.zeros(0, dtype=np.int64)
        if len(pool) <= 4 * want:
            cands = np.asarray([k for k in pool if k not in exclude], dtype=np.int64)
            if cands.size <= want:
                return cands
            return self.rng.choice(cands, size=want, replace=False)
        arr = np.asarray(pool, dtype=np.int64) if len(pool) < 4096 else None
        idx = self.rng.choice(len(pool), size=min(len(pool), 2 * want + 8), replace=False)
        keys = (
            arr[idx]
            if arr is not None
            else np.asarray([pool[i] for i in idx.tolist()], dtype=np.int64)
        )
        keys = keys[[k not in exclude for k in keys.tolist()]]
        return keys[:want]
