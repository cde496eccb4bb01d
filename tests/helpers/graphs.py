"""Small synthetic graphs for the graph tests: two or three noisy communities."""

from __future__ import annotations

from typing import Any

import numpy as np


def community_graph(
    n_per_class: int = 40, classes: int = 3, dim: int = 8, seed: int = 0, prefix: str = "n"
) -> dict[str, Any]:
    """A JSON graph with string ids: dense edges inside a class, few across, noisy features."""
    rng = np.random.default_rng(seed)
    n = n_per_class * classes
    y = np.repeat(np.arange(classes), n_per_class)
    centers = rng.normal(0, 1, (classes, dim))
    x = centers[y] * 1.0 + rng.normal(0, 1, (n, dim))
    edges: set[tuple[int, int]] = set()
    while len(edges) < n * 3:
        a, b = rng.integers(0, n, 2)
        same = y[a] == y[b]
        if a != b and (same or rng.random() < 0.1):
            edges.add((min(a, b), max(a, b)))
    ids = [f"{prefix}-{i}-é" for i in range(n)]
    names = ["alpha", "beta", "gamma", "delta"][:classes]
    return {
        "nodes": ids,
        "edges": [[ids[a], ids[b]] for a, b in sorted(edges)],
        "features": x.round(4).tolist(),
        "labels": [names[c] for c in y],
    }
