"""The confusion matrix of a fine-tuned classifier as a PNG (matplotlib Agg)."""

from __future__ import annotations

import io
from collections.abc import Sequence

__all__ = ["confusion_png"]


def confusion_png(confusion: Sequence[Sequence[int]], names: Sequence[str], *, title: str) -> bytes:
    """Draw counts with true labels down and predicted labels across, each cell annotated."""
    import matplotlib

    matplotlib.use("Agg")  # headless: workers have no display
    import numpy as np
    from matplotlib.figure import Figure

    cm = np.asarray(confusion, dtype=np.int64)  # (classes, classes)
    side = min(2.0 + 0.6 * len(names), 14.0)
    fig = Figure(figsize=(side + 1.5, side), dpi=100)
    ax = fig.subplots()
    image = ax.imshow(cm, cmap="Blues")
    fig.colorbar(image, ax=ax)
    ticks = range(len(names))
    short = [n if len(n) <= 16 else n[:15] + "…" for n in names]
    ax.set_xticks(list(ticks), short, rotation=45, ha="right")
    ax.set_yticks(list(ticks), short)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if len(names) <= 30:  # past that the numbers would overlap
        top = cm.max() or 1
        for i in ticks:
            for j in ticks:
                color = "white" if cm[i, j] > top / 2 else "black"
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", color=color, fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
