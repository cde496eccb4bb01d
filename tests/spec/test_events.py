"""Event-stream validation: every problem listed with its location; the shared files load."""

from __future__ import annotations

import json

import numpy as np
import pytest

from helpers.paths import SHARED_DATA
from open_autoglm.errors import ValidationError
from open_autoglm.spec.event_loaders import load_events
from open_autoglm.spec.events import (
    EventLimits,
    EventPolicy,
    OrderPolicy,
    parse_events,
    validate_event_arrays,
)

TEMPORAL = SHARED_DATA / "temporal"


def _problems(exc: pytest.ExceptionInfo[ValidationError]) -> dict[str, str]:
    return {".".join(map(str, d["loc"])): d["msg"] for d in exc.value.details}


def test_json_stream_parses_both_event_forms():
    s = parse_events(
        {
            "events": [
                {"src": "a", "dst": "b", "t": 1, "features": [0, 0], "label": 0},
                {"src": "b", "dst": "c", "t": 2.5, "features": [1, 2], "label": 1},
            ]
        }
    )
    assert s.node_ids == ("a", "b", "c")
    assert s.src.tolist() == [0, 1] and s.dst.tolist() == [1, 2]
    assert s.t.tolist() == [1.0, 2.5]
    assert s.edge_features.tolist() == [[0, 0], [1, 2]] and s.labels.tolist() == [0, 1]
    with pytest.raises(ValidationError) as exc:  # features on some events only
        parse_events({"events": [["a", "b", 1], {"src": "b", "dst": "c", "t": 2, "features": [1]}]})
    assert "edge_features.0" in _problems(exc)


def test_every_problem_is_listed_with_its_location():
    bad = {
        "nodes": [1, 2, 3],
        "events": [
            [1, 2, "noon"],
            [1, 9, 3],
            [2, 3, float("nan")],
            {"src": 1, "dst": 2},
            [1, 2, 5, 6],
        ],
        "edge_features": [[0.0, 1.0], [1.0], [0.0, float("inf")], [0.0, 1.0], [1.0, "x"]],
    }
    with pytest.raises(ValidationError) as exc:
        parse_events(bad)
    p = _problems(exc)
    assert "not a number" in p["events.0.t"] or "must be a number" in p["events.0.t"]
    assert "not finite" in p["events.2.t"]
    assert p["events.3.t"] == "field required"
    assert "got 4 values" in p["events.4"]
    assert "expected 2" in p["edge_features.1"]
    assert "not finite" in p["edge_features.2.1"]
    assert "must be a number" in p["edge_features.4.1"]


def test_undeclared_nodes_are_named():
    with pytest.raises(ValidationError) as exc:
        parse_events({"nodes": ["a", "b"], "events": [["a", "b", 1], ["a", "z", 2], ["q", "b", 3]]})
    p = _problems(exc)
    assert "undeclared node 'z'" in p["events.1.dst"]
    assert "undeclared node 'q'" in p["events.2.src"]


def test_unsorted_stream_is_sorted_stably_or_rejected_by_policy():
    obj = {"events": [[1, 2, 5], [2, 3, 1], [3, 1, 5], [1, 3, 2]]}
    s = parse_events(obj)
    assert s.t.tolist() == [1, 2, 5, 5]
    assert s.src.tolist() == [1, 0, 0, 2]  # ties keep input order: (1,2,5) before (3,1,5)
    assert "sorted stably" in s.notes[0]["msg"]
    with pytest.raises(ValidationError) as exc:
        parse_events(obj, policy=EventPolicy(unsorted=OrderPolicy.ERROR))
    p = _problems(exc)
    assert set(p) == {"events.1.t", "events.3.t"}


def test_empty_stream_and_limits():
    with pytest.raises(ValidationError, match="1 problem"):
        parse_events({"events": []})
    with pytest.raises(ValidationError) as exc:
        parse_events({"events": [[1, 2, 1]] * 5}, limits=EventLimits(max_events=4))
    assert "exceeds the limit of 4" in exc.value.details[0]["msg"]
    with pytest.raises(ValidationError) as exc:
        validate_event_arrays([1], [2], [0.0], edge_features=np.zeros((1, 5)),
                              limits=EventLimits(max_feature_dim=4))  # fmt: skip
    assert "width 5 exceeds" in exc.value.details[0]["msg"]


def test_problem_list_is_capped_but_counted():
    events = [[1, 2, "x"] for _ in range(30)]
    with pytest.raises(ValidationError) as exc:
        parse_events({"events": events}, limits=EventLimits(max_problems=5))
    assert exc.value.message == "invalid event stream: 30 problems"
    assert exc.value.details[-1]["msg"] == "... and 25 more"


def test_file_formats_round_trip(tmp_path):
    obj = {"events": [["u1", "p1", 1.0], ["u2", "p1", 2.0], ["u1", "p2", 3.0]]}
    (tmp_path / "s.json").write_text(json.dumps(obj))
    (tmp_path / "s.csv").write_text("source,target,rating,time\nu1,p1,1,1\nu2,p1,-2,2\nu1,p2,3,3\n")
    np.savez(tmp_path / "s.npz", src=np.array([0, 1, 0]), dst=np.array([2, 2, 3]),
             t=np.array([1.0, 2.0, 3.0]))  # fmt: skip
    import pandas as pd

    pd.DataFrame({"src": ["u1", "u2", "u1"], "dst": ["p1", "p1", "p2"], "t": [1, 2, 3]}).to_parquet(
        tmp_path / "s.parquet"
    )
    for name in ("s.json", "s.csv", "s.npz", "s.parquet"):
        s = load_events(tmp_path / name)
        assert s.num_events == 3 and s.t.tolist() == [1.0, 2.0, 3.0], name
    assert load_events(tmp_path / "s.csv").edge_features.tolist() == [[1.0], [-2.0], [3.0]]


def test_csv_names_bad_timestamp_and_feature_cells(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("src,dst,t,w\n1,2,10,0.5\n2,3,soon,1.0\n3,1,12,abc\n")
    with pytest.raises(ValidationError) as exc:
        load_events(path)
    p = _problems(exc)
    assert "edge_features.2.w" in p
    path.write_text("src,dst,t\n1,2,10\n2,3,soon\n")
    with pytest.raises(ValidationError) as exc:
        load_events(path)
    assert "not a number" in _problems(exc)["events.1.t"]


@pytest.mark.parametrize(
    ("name", "events", "nodes", "edge_dim", "sorted_note"),
    [
        ("ml_wikipedia.txt", 157_474, 9_227, 0, False),
        ("CollegeMsg.txt", 59_835, 1_899, 0, False),
        ("soc-sign-bitcoinalpha.csv", 24_186, 3_783, 1, True),
    ],
)
def test_shared_streams_load_as_they_are(name, events, nodes, edge_dim, sorted_note):
    s = load_events(TEMPORAL / name)
    assert (s.num_events, s.num_nodes, s.edge_dim) == (events, nodes, edge_dim)
    assert bool(np.all(np.diff(s.t) >= 0))
    assert bool(s.notes) is sorted_note
