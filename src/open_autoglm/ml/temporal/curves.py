"""Training-curve plot for temporal models: loss and validation AP per epoch, PNG bytes."""

from __future__ import annotations

import io
from collections.abc import Sequence

__all__ = ["plot_temporal_curves"]


def plot_temporal_curves(history: Sequence[dict[str, float]], *, title: str = "") -> bytes:
    """Draw training loss (left) and validation AP / ROC-AUC (right) against epoch."""
    import matplotlib

    matplotlib.use("Agg")  # headless: workers have no display
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 3.2), dpi=100)
    ax_loss, ax_ap = fig.subplots(1, 2)
    epochs = [h["epoch"] for h in history]
    ax_loss.plot(epochs, [h["loss"] for h in history], marker="o", label="train loss")
    ax_loss.set_xlabel("epoch")
    ax_loss.legend()
    ax_ap.plot(epochs, [h["val_ap"] for h in history], marker="o", label="val AP")
    ax_ap.plot(epochs, [h["val_auc"] for h in history], marker="o", label="val ROC-AUC")
    ax_ap.set_xlabel("epoch")
    ax_ap.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
