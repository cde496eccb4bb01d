"""The strategies side by side as a PNG: one group of bars per strategy (matplotlib Agg)."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

__all__ = ["plot_comparison"]

_METRICS = ("accuracy", "macro_f1", "weighted_f1", "roc_auc")


def plot_comparison(
    results: Mapping[str, Mapping[str, float]],
    *,
    spread: Mapping[str, Mapping[str, float]] | None = None,
    metrics: Sequence[str] = _METRICS,
    title: str = "",
) -> bytes:
    """Bars of each metric (that every strategy has) per strategy; error bars from ``spread``."""
    import matplotlib

    matplotlib.use("Agg")  # headless: workers have no display
    from matplotlib.figure import Figure

    names = list(results)
    shown = [m for m in metrics if all(m in results[n] for n in names)]
    fig = Figure(figsize=(max(5.0, 1.4 * len(names) + 2), 3.6), dpi=100)
    ax = fig.subplots()
    width = 0.8 / max(len(shown), 1)
    for k, metric in enumerate(shown):
        xs = [i + (k - (len(shown) - 1) / 2) * width for i in range(len(names))]
        ys = [results[n][metric] for n in names]
        err = [spread[n].get(metric, 0.0) for n in names] if spread else None
        bars = ax.bar(xs, ys, width, yerr=err, capsize=2, label=metric.replace("_", " "))
        ax.bar_label(bars, fmt="%.3f", fontsize=6, padding=1)
    ax.set_xticks(range(len(names)), names)
    low = min((results[n][m] for n in names for m in shown), default=0.0)
    ax.set_ylim(max(0.0, low - 0.1), 1.0)
    ax.legend(fontsize=7, loc="lower right")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
