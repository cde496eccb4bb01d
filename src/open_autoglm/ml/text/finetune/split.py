"""Train/validation/test row indices: a stratified split by fractions, or a given split column.

Stratified means every class keeps its share in each part (each part gets at least one row
of every class), so a rare class is never missing from validation or test by chance. The
split depends on the seed only, never on the process or the run.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from open_autoglm.ml.text.finetune.dataset import SplitName

__all__ = ["Split", "given_split", "stratified_split"]


@dataclass(frozen=True)
class Split:
    """Row indices of each part, each list sorted."""

    train: list[int]
    validation: list[int]
    test: list[int]

    def sizes(self) -> dict[str, int]:
        return {
            "train": len(self.train),
            "validation": len(self.validation),
            "test": len(self.test),
        }


def stratified_split(labels: Sequence[int], *, validation: float, test: float, seed: int) -> Split:
    """Split rows per class: ``round(n * fraction)`` rows (at least one when the fraction is
    above 0) to validation and to test, the rest to train.

    A class of ``n`` rows needs ``n >= 1 + (validation > 0) + (test > 0)``; the data
    validation (:func:`~open_autoglm.ml.text.finetune.dataset.build_dataset`) checks that.
    """
    rng = random.Random(seed)
    by_class: dict[int, list[int]] = {}
    for i, label in enumerate(labels):
        by_class.setdefault(label, []).append(i)
    parts: dict[SplitName, list[int]] = {name: [] for name in SplitName}
    for label in sorted(by_class):
        rows = by_class[label]
        rng.shuffle(rows)
        n = len(rows)
        n_test = max(1, round(n * test)) if test > 0 else 0
        n_val = max(1, round(n * validation)) if validation > 0 else 0
        n_test = min(n_test, max(n - 1 - n_val, 0))  # train keeps at least one row
        n_val = min(n_val, n - 1 - n_test)
        parts[SplitName.TEST] += rows[:n_test]
        parts[SplitName.VALIDATION] += rows[n_test : n_test + n_val]
        parts[SplitName.TRAIN] += rows[n_test + n_val :]
    return Split(*(sorted(parts[name]) for name in SplitName))


def given_split(splits: Sequence[SplitName]) -> Split:
    """The split a column names, row by row."""
    return Split(*([i for i, s in enumerate(splits) if s is name] for name in SplitName))
