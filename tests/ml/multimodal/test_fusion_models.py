"""Fusion strategies: one interface, discovered from their modules, shapes and masking of a
missing modality, and learning a problem that needs both modalities."""

from __future__ import annotations

import pytest
import torch

from open_autoglm.errors import ValidationError
from open_autoglm.ml.multimodal.batch import FusionBatch, FusionConfig
from open_autoglm.ml.multimodal.fusion import strategy_class, strategy_names
from open_autoglm.ml.multimodal.training import FusionJob, TrainSettings, fit, stratified_split

CONFIG = FusionConfig(text_dim=8, cardinalities=(4, 3), numeric=2, classes=3, hidden=16, shared=8)


def make_batch(rows: int, seed: int = 0) -> FusionBatch:
    g = torch.Generator().manual_seed(seed)
    return FusionBatch(
        text=torch.randn(rows, 8, generator=g),
        text_present=torch.ones(rows, dtype=torch.bool),
        categorical=torch.randint(0, 3, (rows, 2), generator=g),
        numeric=torch.randn(rows, 2, generator=g),
        tab_present=torch.ones(rows, dtype=torch.bool),
    )


def test_strategies_are_discovered_from_their_modules() -> None:
    assert strategy_names() == ["early", "hybrid", "late", "tabular", "text"]
    for name in strategy_names():
        assert strategy_class(name).strategy == name
    with pytest.raises(KeyError, match="unknown fusion strategy 'stacked'"):
        strategy_class("stacked")


@pytest.mark.parametrize("name", ["early", "hybrid", "late", "tabular", "text"])
def test_every_strategy_gives_class_scores_and_trains(name: str) -> None:
    torch.manual_seed(0)
    model = strategy_class(name)(CONFIG)
    batch = make_batch(5)
    assert model(batch).shape == (5, 3)
    proba = model.predict_proba(batch)
    assert torch.allclose(proba.sum(dim=1), torch.ones(5))
    loss = model.loss(batch, torch.tensor([0, 1, 2, 0, 1]))
    loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("name", ["early", "hybrid", "late", "text"])
def test_a_row_without_text_ignores_its_text_vector(name: str) -> None:
    torch.manual_seed(0)
    model = strategy_class(name)(CONFIG).eval()
    batch = make_batch(4)
    absent = FusionBatch(
        batch.text,
        torch.tensor([True, False, True, False]),
        *(batch.categorical, batch.numeric, batch.tab_present),
    )
    other = torch.randn(absent.text.shape, generator=torch.Generator().manual_seed(9))
    noisy = FusionBatch(
        other, *(absent.text_present, absent.categorical, absent.numeric, absent.tab_present)
    )
    a, b = model.predict_proba(absent), model.predict_proba(noisy)
    assert torch.allclose(a[[1, 3]], b[[1, 3]], atol=1e-6)  # masked rows: unchanged
    assert not torch.allclose(a[[0, 2]], b[[0, 2]], atol=1e-3)  # present rows: text matters


def test_late_fusion_with_neither_modality_is_uniform() -> None:
    model = strategy_class("late")(CONFIG)
    batch = make_batch(2)
    none = FusionBatch(
        batch.text,
        torch.zeros(2, dtype=torch.bool),
        batch.categorical,
        batch.numeric,
        torch.zeros(2, dtype=torch.bool),
    )
    assert torch.allclose(model.predict_proba(none), torch.full((2, 3), 1 / 3))


def test_a_strategy_refuses_a_schema_without_its_modality() -> None:
    no_text = FusionConfig(text_dim=0, cardinalities=(4,), numeric=1, classes=2)
    with pytest.raises(ValidationError, match="'hybrid' needs text columns"):
        strategy_class("hybrid")(no_text)
    assert strategy_class("tabular")(no_text)


def test_hybrid_learns_a_label_that_needs_both_modalities() -> None:
    # label = (text direction > 0) XOR (category is 1): neither modality alone beats ~50%.
    g = torch.Generator().manual_seed(1)
    rows = 600
    direction = torch.randn(8, generator=g)
    text = torch.randn(rows, 8, generator=g)
    cat = torch.randint(0, 2, (rows, 1), generator=g)
    labels = ((text @ direction > 0).long() ^ cat[:, 0]).long()
    batch = FusionBatch(
        text,
        torch.ones(rows, dtype=torch.bool),
        cat,
        torch.zeros(rows, 0),
        torch.ones(rows, dtype=torch.bool),
    )
    config = FusionConfig(
        text_dim=8, cardinalities=(3,), numeric=0, classes=2, hidden=16, shared=8, heads=2
    )
    train, val, test = stratified_split(labels.numpy(), [0.7, 0.1, 0.2], seed=0)
    accuracy = {}
    for name in ("hybrid", "text"):
        torch.manual_seed(0)
        model = strategy_class(name)(config)
        settings = TrainSettings(epochs=20, batch_size=64, lr=5e-3, patience=0, seed=0)
        fit(FusionJob(model, batch, labels, train, val, settings))
        pred = model.predict_proba(batch.select(torch.from_numpy(test))).argmax(dim=1)
        accuracy[name] = float((pred == labels[test]).float().mean())
    assert accuracy["hybrid"] > 0.85
    assert accuracy["text"] < 0.65


def test_stratified_split_keeps_class_shares_and_is_seeded() -> None:
    labels = [0] * 80 + [1] * 20
    train, val, test = stratified_split(labels, [0.7, 0.1, 0.2], seed=3)
    assert sorted([*train, *val, *test]) == list(range(100))
    assert (len(train), len(val), len(test)) == (70, 10, 20)
    assert sum(labels[i] for i in test) == 4
    again = stratified_split(labels, [0.7, 0.1, 0.2], seed=3)
    assert all((a == b).all() for a, b in zip(again, (train, val, test), strict=True))
