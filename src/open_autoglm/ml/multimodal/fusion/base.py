"""The fusion model interface: encode each modality, fuse, classify, with overridable steps.

As in PyTorch Geometric's ``MessagePassing``, the forward pass is fixed and the steps are
methods a strategy overrides: :meth:`FusionModel.encode` (per-modality features),
:meth:`FusionModel.fuse` (one vector per row) and :meth:`FusionModel.classify` (logits).
:meth:`FusionModel.sample_losses` is the training objective; late fusion overrides it to train each
modality's head on its own as well. Every strategy takes a :class:`FusionConfig` and a
:class:`FusionBatch`, so training, saving and prediction treat them alike.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from open_autoglm.errors import ValidationError
from open_autoglm.ml.multimodal.batch import FusionBatch, FusionConfig
from open_autoglm.ml.multimodal.tabular_encoder import TabularEncoder
from open_autoglm.ml.multimodal.text_encoder import TextEncoder

__all__ = ["Encoded", "FusionModel", "mlp_head"]

Encoded = dict[str, Tensor]  # modality -> features, e.g. {"text": (batch, hidden)}


def mlp_head(width: int, hidden: int, classes: int, dropout: float) -> nn.Module:
    """(batch, width) -> (batch, classes)."""
    return nn.Sequential(
        nn.Linear(width, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, classes)
    )


class FusionModel(nn.Module):
    """Base class of the fusion strategies. Subclasses set ``needs`` and override steps."""

    strategy: ClassVar[str] = ""
    # Modalities the strategy cannot do without ("text", "tabular").
    needs: ClassVar[frozenset[str]] = frozenset({"text", "tabular"})

    def __init__(self, config: FusionConfig) -> None:
        super().__init__()
        missing = [m for m in sorted(self.needs) if not self._has(config, m)]
        if missing:
            raise ValidationError(
                f"fusion strategy {self.strategy!r} needs {' and '.join(missing)} columns",
                details=[
                    {
                        "loc": ["params", "schema", m],
                        "msg": f"declare {m} columns for {self.strategy!r}",
                    }
                    for m in missing
                ],
            )
        self.config = config

    @staticmethod
    def _has(config: FusionConfig, modality: str) -> bool:
        return config.has_text if modality == "text" else config.has_tabular

    # -- building blocks subclasses share

    def text_encoder(self) -> TextEncoder:
        c = self.config
        return TextEncoder(c.text_dim, c.hidden, c.dropout)

    def tabular_encoder(self) -> TabularEncoder:
        c = self.config
        return TabularEncoder(c.cardinalities, c.numeric, c.category_dim, c.hidden, c.dropout)

    # -- the steps

    def encode(self, batch: FusionBatch) -> Encoded:
        """Per-modality features of the batch."""
        raise NotImplementedError

    def fuse(self, encoded: Encoded, batch: FusionBatch) -> Tensor:
        """One vector per row: (batch, width)."""
        raise NotImplementedError

    def classify(self, fused: Tensor) -> Tensor:
        """Logits (batch, classes)."""
        head: nn.Module = self.head  # type: ignore[assignment]
        return head(fused)  # type: ignore[no-any-return]

    def forward(self, batch: FusionBatch, labels: Tensor | None = None) -> Tensor:
        """Logits (batch, classes); given ``labels``, the per-row training losses (batch,)
        instead, so that DDP and FSDP, which hook ``forward``, see the training step."""
        if labels is not None:
            return self.sample_losses(batch, labels)
        return self.classify(self.fuse(self.encode(batch), batch))  # (batch, classes)

    def sample_losses(self, batch: FusionBatch, labels: Tensor) -> Tensor:
        """The training objective per row (batch,): cross-entropy of the fused prediction."""
        logits = self.classify(self.fuse(self.encode(batch), batch))  # (batch, classes)
        return F.cross_entropy(logits.float(), labels, reduction="none")

    def loss(self, batch: FusionBatch, labels: Tensor) -> Tensor:
        """The training objective: the mean of :meth:`sample_losses`."""
        return self.sample_losses(batch, labels).mean()

    @torch.no_grad()
    def predict_proba(self, batch: FusionBatch) -> Tensor:
        """Class probabilities (batch, classes), in eval mode."""
        was_training = self.training
        self.eval()
        try:
            return torch.softmax(self(batch), dim=-1)
        finally:
            self.train(was_training)
