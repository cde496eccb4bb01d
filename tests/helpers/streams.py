"""Small synthetic event streams for the temporal tests: users who keep returning to pages."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["returning_users"]


def returning_users(
    users: int = 16, pages: int = 12, events: int = 600, seed: int = 0
) -> dict[str, Any]:
    """A JSON stream: each user mostly revisits two favourite pages, sometimes another one."""
    rng = np.random.default_rng(seed)
    favourite = rng.integers(0, pages, (users, 2))
    out = []
    t = 0
    for _ in range(events):
        u = int(rng.integers(0, users))
        p = (
            int(favourite[u, rng.integers(0, 2)])
            if rng.random() < 0.85
            else int(rng.integers(0, pages))
        )
        t += int(rng.integers(1, 10))
        out.append([f"u{u}", f"p{p}", t])
    return {"events": out}
