"""The replica pool's dispatch policy, driven directly: its cost model and shares."""

from __future__ import annotations

import math
import random

import pytest

from open_autoglm.executors.replica_dispatch import CallCostModel, DispatchPolicy

# MiniLM at one thread on a 2-core Xeon: ~7 ms per call plus ~0.036 ms per unit of cost
# (a character plus 8 per text; a 6-40 word sentence is ~155 units).
FIXED, PER_UNIT, TEXT = 0.007, 0.036e-3, 155.0


def _trained(calls: int = 200, seed: int = 0, noise: float = 0.05) -> CallCostModel:
    rng = random.Random(seed)
    model = CallCostModel()
    for _ in range(calls):
        cost = TEXT * rng.randint(1, 16)
        model.observe(cost, (FIXED + PER_UNIT * cost) * (1 + rng.uniform(-noise, noise)))
    return model


def test_cost_model_recovers_the_fixed_and_per_text_parts() -> None:
    model = _trained()
    assert model.ready
    assert model.fixed_s == pytest.approx(FIXED, rel=0.2)
    assert model.per_unit_s == pytest.approx(PER_UNIT, rel=0.1)
    assert model.predict(8 * TEXT) == pytest.approx(FIXED + PER_UNIT * 8 * TEXT, rel=0.1)


def test_cost_model_is_not_ready_without_enough_different_calls() -> None:
    few = CallCostModel(min_calls=8)
    for k in range(7):
        few.observe((4 + k % 2) * TEXT, 0.03 + 0.005 * (k % 2))
    assert not few.ready  # too few calls yet
    few.observe(8 * TEXT, 0.05)
    assert few.ready and few.per_unit_s > 0
    same = CallCostModel()
    for _ in range(50):  # every call the same size: no slope can be told from the fixed part
        same.observe(8 * TEXT, 0.05)
    assert not same.ready and same.predict(8 * TEXT) == 0.0


def test_cost_model_follows_a_machine_that_got_slower() -> None:
    model = _trained()
    rng = random.Random(1)
    for _ in range(300):  # another process now takes half the core: everything 2x slower
        cost = TEXT * rng.randint(1, 16)
        model.observe(cost, 2 * (FIXED + PER_UNIT * cost))
    assert model.per_unit_s == pytest.approx(2 * PER_UNIT, rel=0.1)


def test_shares_split_evenly_between_free_replicas_and_give_busy_ones_what_pays() -> None:
    policy = DispatchPolicy(cost=_trained())
    work = 30 * TEXT
    # Alone: everything. Another free replica: half each.
    assert policy.share(work, []) == work
    assert policy.share(work, [0.0]) == pytest.approx(work / 2, rel=0.01)
    # The other is busy for longer than this replica needs for all of it: all of it.
    assert policy.share(work, [1.0]) == work
    # It frees in 30 ms: this replica takes more than half, so both end together.
    mine = policy.share(work, [0.030])
    fixed, per_unit = policy.cost.fixed_s, policy.cost.per_unit_s
    assert work / 2 < mine < work
    assert fixed + per_unit * mine == pytest.approx(
        0.030 + fixed + per_unit * (work - mine), rel=1e-6
    )
    # Two texts, the other busy 20 ms: a second call's fixed cost is not worth it.
    assert policy.share(2 * TEXT, [0.020]) == 2 * TEXT


def test_before_the_model_is_ready_busy_replicas_get_no_share() -> None:
    policy = DispatchPolicy()
    assert policy.predicted_end(10.0, 5 * TEXT) == math.inf
    assert policy.share(10 * TEXT, [math.inf]) == 10 * TEXT
    assert policy.share(10 * TEXT, [0.0, math.inf]) == 5 * TEXT
