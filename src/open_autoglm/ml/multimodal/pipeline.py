"""From a validated table and its text embeddings to trained, evaluated fusion models.

:func:`train_strategies` splits the rows (stratified, or a given split), fits the
preprocessing on the training rows only, and trains each requested strategy on the same
split, so their test metrics compare like with like. :func:`predict_table` scores new rows
with a stored model. Both are plain functions: the task handlers, the benchmark and a
notebook call the same code.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from open_autoglm.ml.multimodal.batch import FusionBatch, FusionConfig
from open_autoglm.ml.multimodal.fusion import strategy_class
from open_autoglm.ml.multimodal.fusion.base import FusionModel
from open_autoglm.ml.multimodal.preprocess import Preprocessor
from open_autoglm.ml.multimodal.training import (
    FusionJob,
    Runner,
    TrainSettings,
    evaluate,
    fit,
    stratified_split,
)
from open_autoglm.ml.training.spec import DistributedParams
from open_autoglm.spec.table import TableData

__all__ = [
    "FusionOptions",
    "Split",
    "TrainedFusion",
    "build_batch",
    "predict_table",
    "train_strategies",
]

Split = tuple[np.ndarray, np.ndarray, np.ndarray]  # train, validation, test row indices
EpochHook = Callable[[str, int, dict[str, float]], None]  # (strategy, epoch, record)


@dataclass(frozen=True)
class FusionOptions:
    """Model sizes, training settings and the split of one training run."""

    hidden: int = 128
    shared: int = 64
    category_dim: int = 16
    text_tokens: int = 4
    heads: int = 4
    dropout: float = 0.2
    min_category_count: int = 1
    train: TrainSettings = field(default_factory=TrainSettings)
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    split_seed: int = 0


@dataclass
class TrainedFusion:
    strategy: str
    model: FusionModel
    config: FusionConfig
    preprocessor: Preprocessor
    metrics: dict[str, Any]  # on the test rows
    history: list[dict[str, float]]
    best_epoch: int
    fit_seconds: float


def build_batch(
    pre: Preprocessor, table: TableData, text: torch.Tensor, text_present: torch.Tensor
) -> tuple[FusionBatch, torch.Tensor | None]:
    """The rows of ``table`` as a batch (and class indices when it has labels)."""
    enc = pre.transform(table)
    batch = FusionBatch(text, text_present, enc.categorical, enc.numeric, enc.tab_present)
    return batch, enc.labels


def _split(table: TableData, options: FusionOptions) -> Split:
    classes = {c: i for i, c in enumerate(table.classes())}
    y = np.asarray([classes[v] for v in table.labels or ()])
    train_frac = 1.0 - options.val_fraction - options.test_fraction
    train, val, test = stratified_split(
        y, [train_frac, options.val_fraction, options.test_fraction], options.split_seed
    )
    return train, val, test


def train_strategies(
    table: TableData,
    text: torch.Tensor,
    text_present: torch.Tensor,
    strategies: Sequence[str],
    options: FusionOptions,
    *,
    split: Split | None = None,
    dist: DistributedParams | None = None,
    runner: Runner | None = None,
    on_epoch: EpochHook | None = None,
    check_cancelled: Callable[[], None] | None = None,
) -> dict[str, TrainedFusion]:
    """Train each of ``strategies`` on one split of ``table``; test metrics for each.

    Args:
        table: validated, with labels.
        text: (rows, text_dim) frozen sentence embeddings; (rows, 0) without text columns.
        text_present: (rows,) bool.
        strategies: registered strategy names.
        options: sizes, training settings and split fractions.
        split: explicit (train, val, test) rows; default a stratified split of ``options``.
        dist, runner: how the training facility runs each strategy (see :func:`fit`).
    """
    train_rows, val_rows, test_rows = split if split is not None else _split(table, options)
    pre = Preprocessor.fit(
        table.subset(train_rows.tolist()),
        min_count=options.min_category_count,
        classes=table.classes(),
    )
    batch, labels = build_batch(pre, table, text, text_present)
    assert labels is not None  # the table was validated with its label
    config = FusionConfig(
        text_dim=int(text.shape[1]) if table.schema.text else 0,
        cardinalities=tuple(pre.cardinalities),
        numeric=len(table.schema.numeric),
        classes=len(pre.classes),
        hidden=options.hidden,
        shared=options.shared,
        category_dim=options.category_dim,
        text_tokens=options.text_tokens,
        heads=options.heads,
        dropout=options.dropout,
    )
    test_idx = torch.from_numpy(test_rows).long()
    out: dict[str, TrainedFusion] = {}
    for name in strategies:
        torch.manual_seed(options.train.seed)
        model = strategy_class(name)(config)
        hook = None if on_epoch is None else (lambda e, r, n=name: on_epoch(n, e, r))
        start = time.perf_counter()
        result = fit(
            FusionJob(model, batch, labels, train_rows, val_rows, options.train),
            dist,
            runner=runner,
            on_epoch=hook,
            check_cancelled=check_cancelled,
        )
        seconds = time.perf_counter() - start
        metrics = evaluate(model, batch.select(test_idx), labels[test_idx])
        metrics["test_rows"] = len(test_rows)
        out[name] = TrainedFusion(
            name, model, config, pre, metrics, result.history, result.best_epoch, seconds
        )
    return out


def predict_table(
    strategy: str,
    config: FusionConfig,
    pre: Preprocessor,
    state: dict[str, torch.Tensor],
    table: TableData,
    text: torch.Tensor,
    text_present: torch.Tensor,
) -> torch.Tensor:
    """Class probabilities (rows, classes) of a stored model on new rows."""
    model = strategy_class(strategy)(config)
    model.load_state_dict(state)
    batch, _ = build_batch(pre, table, text, text_present)
    return model.predict_proba(batch)
