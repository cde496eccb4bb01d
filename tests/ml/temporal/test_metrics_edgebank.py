"""AP/AUC with ties, EdgeBank, chronological split and negatives."""

from __future__ import annotations

import numpy as np
import pytest

from open_autoglm.ml.temporal.edgebank import EdgeBank
from open_autoglm.ml.temporal.metrics import average_precision, roc_auc
from open_autoglm.ml.temporal.negatives import NegativeSampler, NegativeStrategy
from open_autoglm.ml.temporal.split import chronological_split
from open_autoglm.spec.events import validate_event_arrays


def test_metrics_match_hand_computed_values():
    # scores 0.9 (pos), 0.8 (neg), 0.7 (pos), 0.1 (neg): AP = 1*0.5 + 2/3*0.5
    assert average_precision([0.9, 0.7], [0.8, 0.1]) == pytest.approx(0.5 + 1 / 3)
    assert roc_auc([0.9, 0.7], [0.8, 0.1]) == pytest.approx(0.75)
    # ties: binary scores as EdgeBank gives them; 1 of 2 positives and 1 of 2 negatives at 1
    assert average_precision([1, 0], [1, 0]) == pytest.approx(0.5 * 0.5 + 0.5 * 0.5)
    assert roc_auc([1, 0], [1, 0]) == pytest.approx(0.5)


def test_edgebank_unlimited_and_time_window():
    bank = EdgeBank()
    bank.observe([0, 1], [1, 2], [1.0, 5.0])
    assert bank.score([0, 1, 2], [1, 2, 0], [10.0, 10.0, 10.0]).tolist() == [1, 1, 0]
    windowed = EdgeBank(window=6.0)
    windowed.observe([0, 1], [1, 2], [1.0, 5.0])
    assert windowed.score([0, 1], [1, 2], [10.0, 10.0]).tolist() == [0, 1]


def _stream(n=400, nodes=30, seed=0):
    rng = np.random.default_rng(seed)
    return validate_event_arrays(
        rng.integers(0, nodes, n), rng.integers(0, nodes, n), np.sort(rng.random(n) * 100)
    )


def test_split_is_chronological_and_holds_nodes_out():
    s = _stream()
    sp = chronological_split(s)
    assert s.t[sp.train].max() <= s.t[sp.val].min() <= s.t[sp.test].min()
    held = ~sp.train_nodes
    assert held.any()
    assert not held[s.src[sp.train]].any() and not held[s.dst[sp.train]].any()
    assert sp.new_node_test.any() and not (sp.new_node_test & ~sp.test).any()


def test_historical_negatives_were_seen_before_and_are_not_in_the_batch():
    s = _stream()
    sampler = NegativeSampler(s.src, s.dst, s.t, last_observed_time=70.0, seed=1)
    ids = np.flatnonzero(s.t > 80)[:20]
    ns, nd = sampler.sample(NegativeStrategy.HISTORICAL, s.src[ids], s.dst[ids], s.t[ids])
    before = set(
        zip(s.src[s.t < s.t[ids].min()].tolist(), s.dst[s.t < s.t[ids].min()].tolist(), strict=True)
    )
    batch = set(zip(s.src[ids].tolist(), s.dst[ids].tolist(), strict=True))
    hist = list(zip(ns[:10].tolist(), nd[:10].tolist(), strict=True))
    assert len(ns) == 20 and all(p in before and p not in batch for p in hist)
    ns, nd = sampler.sample(NegativeStrategy.RANDOM, s.src[ids], s.dst[ids], s.t[ids])
    assert ns.tolist() == s.src[ids].tolist()
