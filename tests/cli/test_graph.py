"""``autoglm graph validate``: every problem printed with its location, exit code 1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from helpers.graphs import community_graph
from open_autoglm.cli.graph import app
from open_autoglm.errors import ValidationError

runner = CliRunner()
BAD = {
    "nodes": ["a", "b", "b", "ü"],
    "edges": [["a", "b"], ["b", "zz"], ["ü", "ü"], ["b", "a"]],
    "features": [[1.0, 0.0], [0.0], [1.0, 1.0], [0.5, 0.5]],
}


def test_invalid_file_lists_every_problem(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(BAD), encoding="utf-8")
    result = runner.invoke(app, ["validate", str(path)], env={"COLUMNS": "200"})
    assert result.exit_code == 1
    for text in (
        "5 problems",
        "nodes[2]",
        "duplicate node id 'b'",
        "edges[1]",
        "references undeclared node 'zz'",
        "features[1]",
        "edges[2]",
        "self-loop",
        "edges[3]",
        "duplicates edges[0]",
    ):
        assert text in result.output, text


def test_json_output_and_policies(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(BAD), encoding="utf-8")
    result = runner.invoke(
        app, ["validate", str(path), "--json", "--self-loops", "drop", "--duplicate-edges", "merge"]
    )
    assert result.exit_code == 1
    body = json.loads(result.output)
    assert body["code"] == "validation_error"
    assert [d["loc"] for d in body["details"]] == [["nodes", 2], ["edges", 1], ["features", 1]]


def test_valid_file_and_non_object_json(tmp_path: Path) -> None:
    good = tmp_path / "good.json"
    good.write_text(json.dumps(community_graph(n_per_class=5)), encoding="utf-8")
    result = runner.invoke(app, ["validate", str(good), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["nodes"] == 15
    listed = tmp_path / "list.json"
    listed.write_text("[1, 2]")
    result = runner.invoke(app, ["validate", str(listed)])
    assert result.exit_code == 1 and "must be a JSON object, got list" in result.output
    assert runner.invoke(app, ["validate", str(tmp_path / "missing.json")]).exit_code == 2


def test_cli_and_graph_train_load_an_npz_alike_under_the_default_policy() -> None:
    # Planetoid's Cora lists each undirected edge both ways: graph-train's default params
    # merge the reverse copies, exactly as `autoglm graph validate` does.
    from helpers.paths import SHARED_DATA
    from open_autoglm.spec.graph import GraphPolicy
    from open_autoglm.tasks.graph import GraphTrainParams, resolve_graph_input

    cora = SHARED_DATA / "graphs" / "cora_planetoid.npz"
    assert GraphTrainParams().policy == GraphPolicy()  # the CLI's defaults are graph-train's
    graph = resolve_graph_input(
        {"artifact": "cora"}, lambda _id: cora.read_bytes(), GraphTrainParams().policy
    )
    result = runner.invoke(app, ["validate", str(cora), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert (summary["nodes"], summary["edges"]) == (graph.num_nodes, graph.num_edges)
    assert graph.num_edges == 5278 and [n["msg"] for n in graph.notes] == [
        "merged 5278 duplicate edge(s), kept the first"
    ]

    # JSON keeps its strict default: a repeated edge is an error there.
    with pytest.raises(ValidationError) as strict:
        resolve_graph_input(
            {"nodes": ["a", "b"], "edges": [["a", "b"], ["b", "a"]]},
            lambda _id: b"",
            GraphTrainParams().policy,
        )
    assert "duplicates edges[0] (policy: error)" in strict.value.details[0]["msg"]
