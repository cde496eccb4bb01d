"""EdgeBank (Poursafaei et al. 2022): predict a link iff the pair was seen before.

The memoryless baseline that any learned model must beat. ``window=None`` remembers every
edge ever observed (EdgeBank-infinity); a window keeps only edges seen within that much time
before the query (EdgeBank-tw). Scores are 0/1, so AP is computed with ties (``metrics.py``).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["EdgeBank"]


class EdgeBank:
    """A bank of directed ``(src, dst)`` pairs with the last time each was observed."""

    def __init__(self, window: float | None = None) -> None:
        self.window = window
        self._last: dict[tuple[int, int], float] = {}

    def reset(self) -> None:
        self._last.clear()

    def observe(self, src: npt.ArrayLike, dst: npt.ArrayLike, t: npt.ArrayLike) -> None:
        """Remember each event (later times overwrite earlier ones)."""
        for s, d, tt in zip(
            np.asarray(src).tolist(), np.asarray(dst).tolist(), np.asarray(t).tolist(), strict=True
        ):
            self._last[(s, d)] = tt

    def score(
        self, src: npt.ArrayLike, dst: npt.ArrayLike, t: npt.ArrayLike
    ) -> npt.NDArray[np.float64]:
        """1.0 where the pair is in the bank (and, with a window, seen within it), else 0.0."""
        out = np.zeros(np.asarray(src).size)
        for k, (s, d, tt) in enumerate(
            zip(
                np.asarray(src).tolist(),
                np.asarray(dst).tolist(),
                np.asarray(t).tolist(),
                strict=True,
            )
        ):
            seen = self._last.get((s, d))
            if seen is not None and (self.window is None or seen >= tt - self.window):
                out[k] = 1.0
        return out
