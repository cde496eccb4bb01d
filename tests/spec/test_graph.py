"""Graph spec validation: every malformed graph is rejected with every problem located."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from helpers.paths import SHARED_DATA
from open_autoglm.errors import ValidationError
from open_autoglm.spec import graph as graph_mod
from open_autoglm.spec import graph_loaders
from open_autoglm.spec.graph import GraphLimits, GraphPolicy, parse_graph, validate_graph_arrays
from open_autoglm.spec.graph_loaders import load_graph, load_graph_csv, load_graph_npz

DATA = SHARED_DATA / "graphs"


def base(**over: Any) -> dict[str, Any]:
    g: dict[str, Any] = {
        "nodes": [1, 2, 3, 4],
        "edges": [[1, 2], [2, 3], [3, 4]],
        "features": [[0.0, 1.0], [1.0, 0.0], [1.0, 1.0], [0.0, 0.0]],
        "labels": [0, 1, 0, 1],
    }
    g.update(over)
    return g


# (case id, graph, expected [(loc, message fragment)], policy or None, limits or None)
MALFORMED: list[tuple[str, Any, list[tuple[list[Any], str]]]] = [
    ("list-json", [1, 2, 3], [([], "must be a JSON object, got list")]),
    ("string-json", "graph", [([], "must be a JSON object, got str")]),
    ("null-json", None, [([], "must be a JSON object, got NoneType")]),
    ("no-nodes-field", {"edges": []}, [(["nodes"], "field required")]),
    ("empty-graph", {"nodes": [], "edges": []}, [(["nodes"], "graph has no nodes")]),
    ("nodes-not-list", base(nodes="1,2"), [(["nodes"], "nodes must be a list")]),
    ("unknown-field", base(colour="red"), [(["colour"], "unknown field 'colour'")]),
    (
        "duplicate-node-ids",
        base(nodes=[1, 2, 2, 4]),
        [(["nodes", 2], "duplicate node id 2 (first at nodes[1])")],
    ),
    (
        "undeclared-node",
        base(edges=[[1, 2], [4, 5]]),
        [(["edges", 1], "edge (4, 5) references undeclared node 5")],
    ),
    (
        "undeclared-both-ends",
        base(edges=[[7, 8]]),
        [
            (["edges", 0], "edge (7, 8) references undeclared node 7"),
            (["edges", 0], "edge (7, 8) references undeclared node 8"),
        ],
    ),
    (
        "unicode-undeclared",
        {"nodes": ["α", "β"], "edges": [["α", "γ"]]},
        [(["edges", 0], "edge ('α', 'γ') references undeclared node 'γ'")],
    ),
    (
        "mixed-id-types",
        {"nodes": [1, "2", 3], "edges": []},
        [(["nodes"], "node ids mix integers and strings")],
    ),
    (
        "huge-int-id",
        {"nodes": [1, 2**70], "edges": []},
        [(["nodes", 1], "does not fit in 64 bits")],
    ),
    ("huge-str-id", {"nodes": ["a" * 300], "edges": []}, [(["nodes", 0], "1..256 characters")]),
    ("empty-str-id", {"nodes": ["", "b"], "edges": []}, [(["nodes", 0], "1..256 characters")]),
    (
        "float-and-bool-ids",
        {"nodes": [1.5, True, None], "edges": []},
        [
            (["nodes", 0], "got float"),
            (["nodes", 1], "got bool"),
            (["nodes", 2], "got NoneType"),
        ],
    ),
    (
        "edge-not-pair",
        base(edges=[[1, 2, 3], "1-2"]),
        [(["edges", 0], "pair"), (["edges", 1], "pair")],
    ),
    ("edge-end-type", base(edges=[[1, 2.0]]), [(["edges", 0, 1], "got float")]),
    (
        "feature-rows-vs-nodes",
        base(features=[[0.0, 1.0]]),
        [(["features"], "features has 1 rows but the graph has 4 nodes")],
    ),
    (
        "ragged-features",
        base(features=[[0.0, 1.0], [1.0], [1.0, 1.0, 1.0], [0.0, 0.0]]),
        [(["features", 1], "row has 1 values, expected 2"), (["features", 2], "3 values")],
    ),
    (
        "non-numeric-features",
        base(features=[[0.0, "x"], [1.0, 0.0], [1.0, None], [0.0, 0.0]]),
        [(["features", 0, 1], "got str"), (["features", 2, 1], "got NoneType")],
    ),
    (
        "nan-inf-features",
        base(features=[[0.0, math.nan], [1.0, 0.0], [math.inf, 1.0], [0.0, -math.inf]]),
        [
            (["features", 0, 1], "not finite (nan)"),
            (["features", 2, 0], "not finite (inf)"),
            (["features", 3, 1], "not finite (-inf)"),
        ],
    ),
    ("labels-vs-nodes", base(labels=[0, 1]), [(["labels"], "labels has 2 entries")]),
    (
        "bad-labels",
        base(labels=[0, -3, 1.5, 1]),
        [(["labels", 1], "must be >= 0"), (["labels", 2], "got float")],
    ),
    ("mixed-labels", base(labels=[0, "a", 1, 1]), [(["labels"], "mix integers and strings")]),
    ("self-loop", base(edges=[[1, 2], [3, 3]]), [(["edges", 1], "edge (3, 3) is a self-loop")]),
    (
        "duplicate-edge-undirected",
        base(edges=[[1, 2], [2, 3], [2, 1]]),
        [(["edges", 2], "edge (2, 1) duplicates edges[0]")],
    ),
    (
        "duplicate-edge-directed",
        base(edges=[[1, 2], [1, 2]], directed=True),
        [(["edges", 1], "edge (1, 2) duplicates edges[0]")],
    ),
    ("directed-not-bool", base(directed="yes"), [(["directed"], "true or false")]),
    (
        "edge-features-rows",
        base(edge_features=[[1.0]]),
        [(["edge_features"], "edge_features has 1 rows but the graph has 3 edges")],
    ),
    (
        "split-undeclared",
        base(split={"train": [1, 9], "dev": [2]}),
        [(["split", "train", 1], "undeclared node 9"), (["split", "dev"], "unknown split")],
    ),
    (
        "many-problems-at-once",
        {
            "nodes": ["a", "b", "a"],
            "edges": [["a", "z"], ["b", "b"], ["b", "a"], ["a", "b"]],
            "features": [[1.0], [math.nan], [1.0, 2.0]],
            "labels": ["x"],
        },
        [
            (["nodes", 2], "duplicate node id 'a'"),
            (["edges", 0], "references undeclared node 'z'"),
            (["edges", 1], "self-loop"),
            (["edges", 3], "duplicates edges[2]"),
            (["features", 2], "row has 2 values"),
            (["labels"], "labels has 1 entries"),
        ],
    ),
]


@pytest.mark.parametrize(
    ("graph", "expected"), [c[1:] for c in MALFORMED], ids=[c[0] for c in MALFORMED]
)
def test_malformed_graph_names_every_problem(
    graph: Any, expected: list[tuple[list[Any], str]]
) -> None:
    with pytest.raises(ValidationError) as err:
        parse_graph(graph)
    details = err.value.details
    for loc, fragment in expected:
        assert any(d["loc"] == loc and fragment in d["msg"] for d in details), (
            loc,
            fragment,
            details,
        )
    assert err.value.message == f"invalid graph: {len(details)} problem" + (
        "s" if len(details) > 1 else ""
    )


def test_at_least_25_malformed_cases() -> None:
    assert len(MALFORMED) >= 25


def test_size_limits_are_configurable() -> None:
    limits = GraphLimits(max_nodes=3, max_edges=2, max_feature_dim=1)
    with pytest.raises(ValidationError) as err:
        parse_graph(base(), limits=limits)
    msgs = {tuple(d["loc"]): d["msg"] for d in err.value.details}
    assert "exceeds the limit of 3" in msgs[("nodes",)]
    assert "exceeds the limit of 2" in msgs[("edges",)]
    assert "exceeds the limit of 1" in msgs[("features",)]


def test_problem_cap_counts_the_rest() -> None:
    n = 50
    g = {"nodes": list(range(n)), "edges": [[i, i + 1000] for i in range(n)]}
    with pytest.raises(ValidationError) as err:
        parse_graph(g, limits=GraphLimits(max_problems=10))
    assert len(err.value.details) == 11
    assert err.value.details[-1]["msg"] == "... and 40 more"
    assert err.value.message == "invalid graph: 50 problems"


def test_policies_drop_and_merge_and_note() -> None:
    g = base(edges=[[1, 2], [2, 2], [2, 1], [3, 4]])
    data = parse_graph(g, policy=GraphPolicy(self_loops="drop", duplicate_edges="merge"))
    assert data.edge_index.tolist() == [[0, 2], [1, 3]]
    assert [n["msg"] for n in data.notes] == [
        "dropped 1 self-loop(s)",
        "merged 1 duplicate edge(s), kept the first",
    ]
    kept = parse_graph(g, policy=GraphPolicy(self_loops="keep", duplicate_edges="merge"))
    assert kept.num_edges == 3
    # a kept self-loop appears once in the message-passing form, other edges twice
    assert kept.message_edge_index().shape == (2, 5)


def test_string_ids_mapping_and_labels() -> None:
    g = {
        "nodes": ["paper-b", "paper-a", "ζ"],
        "edges": [["paper-a", "ζ"], ["paper-b", "paper-a"]],
        "labels": ["ml", None, "db"],
        "features": [[1, 0], [0, 1], [1, 1]],
    }
    data = parse_graph(g)
    assert data.node_ids == ("paper-b", "paper-a", "ζ")
    assert data.label_names == ("db", "ml")
    assert data.labels is not None and data.labels.tolist() == [1, -1, 0]
    assert data.index_of(["ζ", "paper-b"]).tolist() == [2, 0]
    assert data.features is not None and data.features.dtype == np.float32
    assert not data.features.flags.writeable
    with pytest.raises(ValidationError) as err:
        data.index_of(["nope", "paper-a", 3])
    assert [d["loc"] for d in err.value.details] == [["node_ids", 0], ["node_ids", 2]]
    json.dumps(data.to_mapping())  # the mapping must be JSON-safe


def test_array_path_reports_out_of_range_edges() -> None:
    with pytest.raises(ValidationError) as err:
        validate_graph_arrays(3, np.array([[0, 1, 5], [1, 2, -1]]), features=np.ones((2, 4)))
    msgs = [d["msg"] for d in err.value.details]
    assert "edge (5, -1) references undeclared node 5" in msgs
    assert any("features must have shape (3, dim)" in m for m in msgs)


def test_npz_loader_on_cora() -> None:
    g = load_graph_npz(DATA / "cora_planetoid.npz")
    assert (g.num_nodes, g.num_features, g.num_classes) == (2708, 1433, 7)
    # Planetoid lists each undirected edge both ways; they merge to one
    assert g.message_edge_index().shape[1] == 10556
    assert int(g.splits["train"].sum()) == 140 and int(g.splits["test"].sum()) == 1000


def test_csv_loader_and_dispatch(tmp_path: Path) -> None:
    (tmp_path / "e.csv").write_text("src,dst,w\na,b,0.5\nb,c,1.5\n")
    (tmp_path / "n.csv").write_text("id,label,f1,f2\na,x,1,0\nb,y,0,1\nc,,1,1\n")
    g = load_graph_csv(tmp_path / "e.csv", tmp_path / "n.csv")
    assert g.node_ids == ("a", "b", "c")
    assert g.edge_features is not None and g.edge_features[:, 0].tolist() == [0.5, 1.5]
    assert g.labels is not None and g.labels.tolist() == [0, 1, -1]
    (tmp_path / "bad.csv").write_text("src,dst\n1,2\n2,2\n")
    with pytest.raises(ValidationError, match="1 problem"):
        load_graph(tmp_path / "bad.csv")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValidationError, match="not valid JSON"):
        load_graph(tmp_path / "bad.json")


def test_public_names_exported() -> None:
    for mod in (graph_mod, graph_loaders):
        for name in mod.__all__:
            assert hasattr(mod, name), name
