"""The fine-tuning job the shared training facility runs: encoder + classification head.

A :class:`TextClassifierJob` is plain data (token ids, labels, row indices, the model
directory's path and the hyper-parameters), so it pickles to every rank of a distributed run;
the model is built from the encoder's weights in each rank after the facility seeds torch.
Texts are tokenised once, in the handler, with the model's own tokenizer.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from open_autoglm.ml.text.finetune.bucketing import bucketed_batches
from open_autoglm.ml.text.finetune.metrics import evaluation_report
from open_autoglm.ml.training.job import TrainJob

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["TextClassifierJob", "load_encoder_classifier", "quiet_transformers"]

# Rows per forward pass when scoring validation and test rows (no gradients kept).
_EVAL_BATCH = 64


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' notice that the new head is untrained (that is the point here)
    and its weight-loading bar (a task's progress is its events)."""
    from transformers.utils import logging as hf_logging

    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()  # type: ignore[no-untyped-call]


def load_encoder_classifier(model_dir: str, label_names: Sequence[str]) -> nn.Module:
    """The encoder's weights under a sequence-classification head with ``label_names``.

    A directory that already holds a classifier with other labels gets a new head
    (``ignore_mismatched_sizes``); safetensors only, never pickle.
    """
    import torch
    from transformers import AutoModelForSequenceClassification

    with quiet_transformers():
        model = AutoModelForSequenceClassification.from_pretrained(
            model_dir,
            num_labels=len(label_names),
            id2label=dict(enumerate(label_names)),
            label2id={name: i for i, name in enumerate(label_names)},
            ignore_mismatched_sizes=True,
            local_files_only=True,
            use_safetensors=True,
            torch_dtype=torch.float32,
        )
    return model  # type: ignore[no-any-return]


class TextClassifierJob(TrainJob):
    """Fine-tune ``model_dir``'s encoder on token ids ``input_ids`` with labels ``labels``.

    Args:
        model_dir: a transformers model directory (safetensors) holding the encoder.
        label_names: the classes, in output order.
        input_ids: every row's token ids (already truncated to the max length).
        labels: every row's class id.
        train_rows / val_rows: the row indices of each part.
        pad_id: the tokenizer's padding id.
        monitor: ``"val_macro_f1"`` (higher is better) or ``"val_loss"``.
    """

    # imported once by the process ranks fork from: BERT-style models and their loader
    preload = (
        "open_autoglm.ml.text.finetune.job",
        "transformers.modeling_utils",
        "transformers.models.bert.modeling_bert",
    )

    def __init__(
        self,
        *,
        model_dir: str,
        label_names: Sequence[str],
        input_ids: Sequence[Sequence[int]],
        labels: Sequence[int],
        train_rows: Sequence[int],
        val_rows: Sequence[int],
        pad_id: int,
        batch_size: int,
        lr: float,
        weight_decay: float,
        epochs: int,
        patience: int,
        seed: int,
        monitor: str = "val_macro_f1",
    ) -> None:
        super().__init__()
        self.model_dir = model_dir
        self.label_names = list(label_names)
        self.input_ids = [list(ids) for ids in input_ids]
        self.labels = list(labels)
        self.lengths = [len(ids) for ids in self.input_ids]
        self.train_rows = list(train_rows)
        self.val_rows = list(val_rows)
        self.pad_id = pad_id
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.epochs = epochs
        self.patience = patience
        self.seed = seed
        self.monitor = monitor
        self.monitor_mode = "min" if monitor == "val_loss" else "max"

    # -- what the facility calls ---------------------------------------------------------------

    def build_model(self) -> nn.Module:
        return load_encoder_classifier(self.model_dir, self.label_names)

    def make_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        import torch

        # No weight decay on biases and LayerNorm weights (the usual BERT fine-tuning recipe).
        decay = [p for p in model.parameters() if p.ndim >= 2]
        rest = [p for p in model.parameters() if p.ndim < 2]
        groups: list[dict[str, Any]] = [
            {"params": decay, "weight_decay": self.weight_decay},
            {"params": rest},
        ]
        return torch.optim.AdamW(
            groups,
            lr=self.lr,
            weight_decay=0.0,
        )

    def global_batches(self, epoch: int) -> list[list[int]]:
        return bucketed_batches(
            self.train_rows,
            self.lengths,
            batch_size=self.batch_size,
            seed=self.seed,
            epoch=epoch,
        )

    def make_scheduler(self, optimizer: torch.optim.Optimizer, total_steps: int) -> Any:
        """Linear warm-up over the first tenth of the steps, then linear decay to zero: a
        freshly initialised head's large early gradients would otherwise disturb the
        pre-trained encoder weights."""
        import torch

        warmup = max(1, total_steps // 10)

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)

    def collate(
        self, indices: list[int], generator: torch.Generator | None = None
    ) -> dict[str, Any]:
        import torch

        width = max((self.lengths[i] for i in indices), default=1)
        ids = torch.full((len(indices), width), self.pad_id, dtype=torch.long)  # (n, width)
        mask = torch.zeros((len(indices), width), dtype=torch.long)  # (n, width)
        for row, i in enumerate(indices):
            n = self.lengths[i]
            ids[row, :n] = torch.tensor(self.input_ids[i], dtype=torch.long)
            mask[row, :n] = 1
        labels = torch.tensor([self.labels[i] for i in indices], dtype=torch.long)  # (n,)
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    def sample_losses(self, model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        import torch.nn.functional as F

        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        return F.cross_entropy(logits.float(), batch["labels"], reduction="none")  # (n,)

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        report = self.report(model, self.val_rows)
        return {
            "val_loss": report["loss"],
            "val_accuracy": report["accuracy"],
            "val_macro_f1": report["macro_f1"],
        }

    def shard_units(self, model: nn.Module) -> list[nn.Module]:
        # The transformer blocks: each is one FSDP unit, so a rank holds one block's full
        # weights at a time.
        encoder = getattr(getattr(model, "base_model", None), "encoder", None)
        layers = getattr(encoder, "layer", None)
        return list(layers) if layers is not None else []

    # -- scoring -------------------------------------------------------------------------------

    def predict_proba(self, model: nn.Module, rows: Sequence[int]) -> np.ndarray:
        """Class probabilities (len(rows), classes) in ``rows`` order."""
        import torch

        out = np.zeros((len(rows), len(self.label_names)), dtype=np.float64)
        # Longest first, so each forward pass pads little.
        order = sorted(range(len(rows)), key=lambda k: -self.lengths[rows[k]])
        was_training = model.training
        model.eval()
        with torch.no_grad():
            for start in range(0, len(order), _EVAL_BATCH):
                picked = order[start : start + _EVAL_BATCH]
                batch = self.collate([rows[k] for k in picked])
                logits = model(
                    input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
                ).logits  # (n, classes)
                out[picked] = torch.softmax(logits.float(), dim=-1).numpy()
        model.train(was_training)
        return out

    def report(self, model: nn.Module, rows: Sequence[int]) -> dict[str, Any]:
        """:func:`~open_autoglm.ml.text.finetune.metrics.evaluation_report` on ``rows``."""
        proba = self.predict_proba(model, rows)
        truth = [self.labels[r] for r in rows]
        return evaluation_report(truth, proba, self.label_names)
