"""The review-rating protocol of ``benchmarks/training.py``: what the accuracy figures rest on."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

import numpy as np
import pandas as pd
import pytest

from helpers.paths import REPO, SHARED_DATA


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_training", REPO / "benchmarks/training.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


training = _load()


def _frame(n_per_rating: int = 20) -> pd.DataFrame:
    rows = []
    for rating in (1, 2, 3, 4, 5):
        for k in range(n_per_rating):
            rows.append(
                {
                    "Review Text": f"review {rating} number {k} has enough words",
                    "Rating": rating,
                    "Recommended IND": int(rating >= 4),
                }
            )
    rows += [
        {"Review Text": "too short to keep", "Rating": 5, "Recommended IND": 1},
        {"Review Text": None, "Rating": 1, "Recommended IND": 0},
        {"Review Text": "   four  words   only here ", "Rating": 3, "Recommended IND": 0},
    ]
    return pd.DataFrame(rows)


def test_ratings_one_and_two_merge_into_four_classes() -> None:
    split = training.review_protocol(_frame())
    assert sorted(set(split.rating.tolist())) == [0, 1, 2, 3]
    texts = np.array(split.texts)
    assert all(t.startswith(("review 1 ", "review 2 ")) for t in texts[split.rating == 0])
    assert np.bincount(split.rating).tolist() == [40, 20, 20, 20]
    assert split.recommend.tolist() == [int(r >= 2) for r in split.rating]


def test_reviews_under_five_words_and_missing_texts_are_dropped() -> None:
    split = training.review_protocol(_frame())
    assert len(split.texts) == 100
    assert all(len(t.split()) >= 5 for t in split.texts)


def test_split_is_80_20_stratified_disjoint_and_deterministic() -> None:
    split = training.review_protocol(_frame())
    assert len(split.train) == 80 and len(split.test) == 20
    assert not set(split.train) & set(split.test)
    assert np.bincount(split.rating[split.test]).tolist() == [8, 4, 4, 4]
    again = training.review_protocol(_frame().sample(frac=1.0, random_state=3).sort_index())
    assert np.array_equal(split.test, again.test)


@pytest.mark.skipif(
    not (SHARED_DATA / "multimodal/womens_clothing_reviews.parquet").exists(),
    reason="the women's clothing reviews are not beside the checkout",
)
def test_the_real_data_set_gives_the_protocol_counts() -> None:
    split = training.load_reviews()
    assert (len(split.texts), len(split.train), len(split.test)) == (22607, 18085, 4522)
    assert np.bincount(split.rating).tolist() == [2369, 2820, 4904, 12514]
    share = np.bincount(split.rating) / len(split.rating)
    test_share = np.bincount(split.rating[split.test]) / len(split.test)
    assert np.abs(share - test_share).max() < 1e-3
