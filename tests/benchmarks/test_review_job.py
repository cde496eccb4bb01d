"""The training benchmark's job: batches every rank agrees on, a pass cut into parts, and the
head-and-tail truncation of long reviews."""

from __future__ import annotations

import importlib.util
import itertools
import sys
from types import ModuleType

from helpers.paths import REPO


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "bench_review_job", REPO / "benchmarks/review_job.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


review_job = _load()


def _job(parts: int = 1, rows: int = 1000) -> object:
    lengths = [3 + (i * 37) % 60 for i in range(rows)]
    return review_job.ReviewJob(
        model_dir="unused",
        ids=[[101] + [7] * (n - 2) + [102] for n in lengths],
        rating=[i % 4 for i in range(rows)],
        recommend=[i % 2 for i in range(rows)],
        train=list(range(800)),
        test=list(range(800, rows)),
        parts=parts,
        epochs=2 * parts,
    )


def test_one_pass_covers_every_training_row_once_in_buckets_of_similar_length() -> None:
    job = _job()
    batches = job.global_batches(0)
    assert sorted(i for b in batches for i in b) == list(range(800))
    assert job.global_batches(0) == batches  # what every rank computes for itself
    assert job.global_batches(1) != batches  # a new shuffle per pass
    spread = [max(len(job.ids[i]) for i in b) - min(len(job.ids[i]) for i in b) for b in batches]
    assert sum(spread) / len(spread) < 10  # lengths 3..62 in random order would spread ~55


def test_a_pass_cut_into_parts_still_covers_every_row_once() -> None:
    job = _job(parts=3)
    first_pass = [job.global_batches(e) for e in range(3)]
    assert sorted(i for part in first_pass for b in part for i in b) == list(range(800))
    assert [b for part in first_pass for b in part] == _job(parts=1).global_batches(0)
    assert job.global_batches(3) != first_pass[0]


def test_warmup_then_linear_decay_to_zero() -> None:
    factor = review_job.warmup_linear(warmup=4, total=20)
    values = [factor(s) for s in range(21)]
    assert values[:4] == sorted(values[:4]) and values[3] < 1.0
    assert values[4] == 1.0 and values[20] == 0.0
    assert all(a >= b for a, b in itertools.pairwise(values[4:]))
