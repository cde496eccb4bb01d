"""The temporal sampler never returns an event at or after the query time."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from open_autoglm.ml.temporal.sampler import NeighborStrategy, TemporalNeighborSampler

events = st.lists(
    st.tuples(st.integers(0, 5), st.integers(0, 5), st.integers(0, 20)), min_size=0, max_size=40
)
queries = st.lists(st.tuples(st.integers(0, 5), st.integers(-1, 22)), min_size=1, max_size=10)


@settings(max_examples=150, deadline=None)
@given(events, queries, st.integers(1, 6), st.sampled_from(list(NeighborStrategy)))
def test_never_returns_an_event_at_or_after_the_query_time(evs, qs, k, strategy):
    src = np.array([e[0] for e in evs], dtype=np.int64)
    dst = np.array([e[1] for e in evs], dtype=np.int64)
    t = np.array([e[2] for e in evs], dtype=np.float64)
    sampler = TemporalNeighborSampler(src, dst, t, num_nodes=6)
    nodes = np.array([q[0] for q in qs])
    times = np.array([q[1] for q in qs], dtype=np.float64)
    nb = sampler.sample(nodes, times, k, strategy, np.random.default_rng(0))
    for i, (v, tq) in enumerate(zip(nodes, times, strict=True)):
        for j in np.flatnonzero(nb.mask[i]):
            e = nb.events[i, j]
            assert t[e] < tq  # strictly before the query
            assert nb.times[i, j] == t[e]
            assert v in (src[e], dst[e]) and nb.nodes[i, j] == (dst[e] if src[e] == v else src[e])
        # most-recent sampling returns exactly the last min(k, available) earlier events
        earlier = [e for e in range(len(evs)) if (src[e] == v or dst[e] == v) and t[e] < tq]
        n_expected = (
            min(k, len(earlier)) if strategy is NeighborStrategy.RECENT else (k if earlier else 0)
        )
        assert int(nb.mask[i].sum()) == n_expected


def test_recent_strategy_returns_the_latest_events_in_time_order():
    src = np.array([0, 0, 0, 0])
    dst = np.array([1, 2, 3, 4])
    t = np.array([1.0, 2.0, 3.0, 4.0])
    nb = TemporalNeighborSampler(src, dst, t, 5).sample([0], [3.5], 2)
    assert nb.nodes.tolist() == [[2, 3]] and nb.times.tolist() == [[2.0, 3.0]]


def test_extend_makes_appended_events_visible():
    sampler = TemporalNeighborSampler([0], [1], [1.0], 2)
    sampler.extend([0], [2], [5.0], event_ids=[1], num_nodes=3)
    nb = sampler.sample([0], [6.0], 3)
    assert sorted(nb.nodes[nb.mask].tolist()) == [1, 2]
