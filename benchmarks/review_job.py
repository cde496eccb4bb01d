"""The training recipe of ``benchmarks/training.py``: MiniLM with a 5-logit head on reviews.

A :class:`~open_autoglm.ml.training.job.TrainJob` is the model recipe only (model, optimizer,
batches, loss, evaluation); the loop, distribution, precision and checkpoints are the
facility's. One head serves both targets: logits 0-3 are the rating classes (cross-entropy),
logit 4 the recommendation (binary cross-entropy), so one fine-tune gives both figures. It
lives in its own module so that rank processes can unpickle it by import.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from open_autoglm.ml.training.job import TrainJob

__all__ = ["RATING_LOGITS", "ReviewJob", "measured_fit", "tokenize", "warmup_linear"]

RATING_LOGITS = 4  # logits 0..3: rating classes; logit 4: recommend
BUCKET = 50  # batches whose samples are sorted by length together


def warmup_linear(warmup: int, total: int) -> Any:
    """LR factor per step: a linear rise over ``warmup`` steps, then a linear fall to 0 at
    ``total`` (BERT's fine-tuning schedule)."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total - step) / max(1, total - warmup))

    return factor


def tokenize(model_dir: str, texts: list[str], max_length: int) -> list[list[int]]:
    """Token ids of every text with the model's own tokenizer, unpadded. A longer text keeps
    its head (a quarter of the budget) and its tail, where reviews tend to give their
    verdict; [CLS] and [SEP] stay at the ends."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    full: list[list[int]] = tokenizer(texts, truncation=True, max_length=512)["input_ids"]
    head = (max_length - 2) // 4
    tail = max_length - 2 - head
    return [
        ids if len(ids) <= max_length else ids[: 1 + head] + ids[len(ids) - 1 - tail :]
        for ids in full
    ]


def _pad(seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """(batch, longest) ids padded with 0 (BERT's [PAD]) and the matching attention mask."""
    longest = max(len(s) for s in seqs)
    ids = torch.zeros(len(seqs), longest, dtype=torch.long)
    mask = torch.zeros(len(seqs), longest, dtype=torch.long)
    for row, s in enumerate(seqs):
        ids[row, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[row, : len(s)] = 1
    return ids, mask


@dataclass
class ReviewJob(TrainJob):
    """Fine-tune a BERT-style encoder directory on token ids with rating and recommend labels.

    ``ids``/``rating``/``recommend`` cover every row; ``train`` and ``test`` index them.
    """

    model_dir: str
    ids: list[list[int]]
    rating: list[int]
    recommend: list[int]
    train: list[int]
    test: list[int]
    seed: int = 0
    epochs: int = 2
    patience: int = 0
    monitor: str = "test_loss"
    monitor_mode: Literal["min", "max"] = "min"
    batch_size: int = 32
    lr: float = 8e-5
    weight_decay: float = 0.01
    warmup_fraction: float = 0.06
    eval_batch: int = 64
    frozen_layers: int = 0  # the embeddings and this many bottom encoder layers stay fixed
    parts: int = 1  # facility epochs per pass over the training rows (evaluation after each)

    def build_model(self) -> nn.Module:
        from transformers import AutoModelForSequenceClassification
        from transformers.utils import logging

        logging.set_verbosity_error()  # the new head's "newly initialised" report
        logging.disable_progress_bar()
        model = AutoModelForSequenceClassification.from_pretrained(
            self.model_dir, num_labels=RATING_LOGITS + 1, local_files_only=True
        )
        if self.frozen_layers:
            # No backward below the first trained layer: about a third less compute with 3 of 6.
            model.bert.embeddings.requires_grad_(False)
            for layer in model.bert.encoder.layer[: self.frozen_layers]:
                layer.requires_grad_(False)
        return model  # type: ignore[no-any-return]

    def make_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        trained = [p for p in model.parameters() if p.requires_grad]
        return torch.optim.AdamW(trained, lr=self.lr, weight_decay=self.weight_decay)

    def make_scheduler(self, optimizer: torch.optim.Optimizer, total_steps: int) -> Any:
        warmup = int(self.warmup_fraction * total_steps)
        return torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_linear(warmup, total_steps))

    def global_batches(self, epoch: int) -> list[list[int]]:
        """Shuffled, then sorted by length within runs of BUCKET batches (little padding),
        then the batches shuffled again; the same list in every rank for (seed, epoch). With
        ``parts`` > 1 a pass is cut into that many consecutive facility epochs."""
        rng = np.random.default_rng([self.seed, epoch // self.parts])
        order = rng.permutation(np.asarray(self.train))
        chunk = self.batch_size * BUCKET
        batches: list[list[int]] = []
        for start in range(0, len(order), chunk):
            part = sorted(order[start : start + chunk].tolist(), key=lambda i: len(self.ids[i]))
            batches += [part[k : k + self.batch_size] for k in range(0, len(part), self.batch_size)]
        batches = [batches[k] for k in rng.permutation(len(batches))]
        cut = epoch % self.parts
        return batches[cut * len(batches) // self.parts : (cut + 1) * len(batches) // self.parts]

    def collate(self, indices: list[int], generator: torch.Generator) -> dict[str, torch.Tensor]:
        ids, mask = _pad([self.ids[i] for i in indices])  # (n, longest) each
        return {
            "input_ids": ids,
            "attention_mask": mask,
            "rating": torch.tensor([self.rating[i] for i in indices], dtype=torch.long),
            "recommend": torch.tensor([self.recommend[i] for i in indices], dtype=torch.float32),
        }

    def sample_losses(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        ).logits.float()  # (n, 5)
        rating = F.cross_entropy(logits[:, :RATING_LOGITS], batch["rating"], reduction="none")
        recommend = F.binary_cross_entropy_with_logits(
            logits[:, RATING_LOGITS], batch["recommend"], reduction="none"
        )
        return rating + recommend  # (n,)

    @torch.no_grad()
    def predict(self, model: nn.Module, rows: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """Rating probabilities (rows, 4) and recommend probabilities (rows,), in ``rows``'
        order."""
        model.eval()
        order = sorted(range(len(rows)), key=lambda k: len(self.ids[rows[k]]))
        logits = torch.empty(len(rows), RATING_LOGITS + 1)
        for start in range(0, len(order), self.eval_batch):
            part = order[start : start + self.eval_batch]
            ids, mask = _pad([self.ids[rows[k]] for k in part])
            logits[part] = model(input_ids=ids, attention_mask=mask).logits.float()
        rating = torch.softmax(logits[:, :RATING_LOGITS], dim=1).numpy()
        return rating, torch.sigmoid(logits[:, RATING_LOGITS]).numpy()

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        from sklearn.metrics import accuracy_score, f1_score, log_loss, roc_auc_score

        rating_p, recommend_p = self.predict(model, self.test)
        y = np.asarray(self.rating)[self.test]
        r = np.asarray(self.recommend)[self.test]
        pred = rating_p.argmax(axis=1)
        out = {
            "test_loss": float(log_loss(y, rating_p, labels=list(range(RATING_LOGITS)))),
            "accuracy": float(accuracy_score(y, pred)),
            "macro_f1": float(f1_score(y, pred, average="macro")),
            "weighted_f1": float(f1_score(y, pred, average="weighted")),
        }
        out["roc_auc"] = float(roc_auc_score(r, recommend_p)) if len(set(r)) > 1 else float("nan")
        return out

    def shard_units(self, model: nn.Module) -> list[nn.Module]:
        return list(model.bert.encoder.layer)  # type: ignore[union-attr, arg-type]


def _fit_summary(job: ReviewJob, dist: Any, threads: int) -> dict[str, Any]:
    from open_autoglm.ml.training.fit import fit

    result = fit(job, dist, threads=threads)
    return {
        "samples_per_s": result.samples_per_s,
        "peak_rss_bytes": result.peak_rss_bytes,
        "loss": result.history[-1]["loss"],
        "seconds": result.wall_seconds,
    }


def measured_fit(job: ReviewJob, dist: Any, threads: int, on_ray: bool, outbox: Any) -> None:
    """Train ``job`` once through the facility and put its samples/s, peak RSS and last loss
    (or the error) in ``outbox``. Meant to run in a fresh process, whose peak RSS is then the
    training's. ``on_ray``: the job runs as a Ray task on a local Ray instance of ``threads``
    CPUs, as under the Ray executor, and its ranks are Ray actors."""
    try:
        if on_ray:
            import ray

            ray.init(num_cpus=threads, include_dashboard=False, log_to_driver=False)
            task = ray.remote(num_cpus=0)(_fit_summary)
            got = ray.get(task.remote(job, dist, threads))
            ray.shutdown()
        else:
            got = _fit_summary(job, dist, threads)
    except Exception as exc:  # the benchmark reports it and goes on
        got = {"error": f"{type(exc).__name__}: {exc}"[:500]}
    outbox.put(got)
