"""Training-curve plot: loss and accuracy per epoch, as PNG bytes (matplotlib Agg)."""

from __future__ import annotations

import io
from collections.abc import Sequence

__all__ = ["plot_training_curves"]


def plot_training_curves(history: Sequence[dict[str, float]], *, title: str = "") -> bytes:
    """Draw loss (left) and train/val/test accuracy (right) against epoch."""
    import matplotlib

    matplotlib.use("Agg")  # headless: workers have no display
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 3.2), dpi=100)
    ax_loss, ax_acc = fig.subplots(1, 2)
    epochs = [h["epoch"] for h in history]
    ax_loss.plot(epochs, [h["loss"] for h in history], label="train loss")
    ax_loss.plot(epochs, [h["val_loss"] for h in history], label="val loss")
    ax_loss.set_xlabel("epoch")
    ax_loss.legend()
    for split in ("train", "val", "test"):
        ax_acc.plot(epochs, [h[f"{split}_acc"] for h in history], label=split)
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("accuracy")
    ax_acc.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
