"""graph-train and graph-predict through a real inline context: string ids round-trip."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pydantic
import pytest
import torch

from helpers.graphs import community_graph
from open_autoglm.errors import ConflictError, ValidationError
from open_autoglm.executors.context import InlineContext
from open_autoglm.tasks.base import ExecutionMode
from open_autoglm.tasks.graph import (
    GraphPredictParams,
    GraphTrainParams,
    graph_task_types,
)

torch.set_num_threads(1)
TYPES = {t.name: t for t in graph_task_types()}


class ModelBook:
    """The smallest models service: names to records, names unique."""

    def __init__(self) -> None:
        self.records: dict[str, dict[str, Any]] = {}

    def register(self, *, name: str, **record: Any) -> dict[str, Any]:
        if name in self.records:
            raise ConflictError(f"model {name} exists")
        self.records[name] = {"name": name, **record}
        return self.records[name]

    def get(self, name: str) -> dict[str, Any]:
        return self.records[name]


def train(
    graph: Any, services: dict[str, Any] | None = None, **params: Any
) -> tuple[InlineContext, Any]:
    ctx = InlineContext(
        task_type="graph-train",
        input=graph,
        params=GraphTrainParams(
            **{"kind": "sage", "epochs": 30, "lr": 0.02, "hidden": 16, **params}
        ),
        services=services,
        task_id="t1",
    )
    return ctx, TYPES["graph-train"].handler(ctx)


def predict(
    trained: InlineContext,
    inp: Any = None,
    model: str | None = None,
    services: Any = None,
    **params: Any,
) -> Any:
    ctx = InlineContext(
        task_type="graph-predict",
        input=inp,
        params=GraphPredictParams(**params),
        model=model,
        services=services,
    )
    ctx.blobs.update(trained.blobs)
    return TYPES["graph-predict"].handler(ctx)


@pytest.fixture(scope="module")
def graph() -> dict[str, Any]:
    return community_graph(seed=1)


@pytest.fixture(scope="module")
def trained(graph: dict[str, Any]) -> tuple[InlineContext, Any]:
    return train(graph)


def test_task_types_registered() -> None:
    assert TYPES["graph-train"].mode == ExecutionMode.PROCESS
    assert TYPES["graph-train"].params_model is GraphTrainParams
    assert TYPES["graph-predict"].params_model is GraphPredictParams
    json.dumps(TYPES["graph-train"].describe())


def test_train_stores_artifacts_and_reports_progress(trained: tuple[InlineContext, Any]) -> None:
    ctx, out = trained
    assert out["metrics"]["test_acc"] >= 0.8
    progress = [d for kind, d in ctx.events if kind == "progress"]
    assert len(progress) == out["epochs_run"] == 30
    assert progress[-1]["fraction"] == 1.0 and "val_acc" in progress[0]
    arts = out["artifacts"]
    assert ctx.blobs[arts["curves"]].startswith(b"\x89PNG")
    assert ctx.blobs[arts["weights"]][:8] != b"\x80\x04\x95"  # safetensors, not a pickle
    meta = json.loads(ctx.blobs[arts["meta"]])
    assert meta["id_mapping"]["node_ids"][0] == "n-0-é"
    assert meta["weights_artifact"] == arts["weights"]
    assert out["registered"] is None
    assert any("no models service" in d["message"] for k, d in ctx.events if k == "log")


def test_predict_round_trips_string_ids(
    trained: tuple[InlineContext, Any], graph: dict[str, Any]
) -> None:
    ctx, out = trained
    ids = graph["nodes"][::7]
    res = predict(ctx, meta=out["artifacts"]["meta"], node_ids=ids)
    assert [p["node"] for p in res["predictions"]] == ids
    assert res["classes"] == ["alpha", "beta", "gamma"]
    truth = dict(zip(graph["nodes"], graph["labels"], strict=True))
    hits = [p["label"] == truth[p["node"]] for p in res["predictions"]]
    assert sum(hits) / len(hits) >= 0.8
    for p in res["predictions"]:
        assert abs(sum(p["probabilities"]) - 1) < 1e-4
        assert p["label"] == res["classes"][int(np.argmax(p["probabilities"]))]
    everything = predict(ctx, meta=out["artifacts"]["meta"])
    assert len(everything["predictions"]) == len(graph["nodes"])
    # the ids ran on their neighbourhood only, and scored as on the whole graph
    whole = {p["node"]: p for p in everything["predictions"]}
    for p in res["predictions"]:
        assert p["label"] == whole[p["node"]]["label"]
        assert np.allclose(p["probabilities"], whole[p["node"]]["probabilities"], atol=1e-5)


def test_inductive_prediction_of_new_nodes(
    trained: tuple[InlineContext, Any], graph: dict[str, Any]
) -> None:
    ctx, out = trained
    x = np.asarray(graph["features"])
    y = np.asarray(graph["labels"])
    new, edges, feats = [], [], []
    for cls in ("alpha", "beta", "gamma"):
        members = [graph["nodes"][i] for i in np.flatnonzero(y == cls)[:4]]
        nid = f"new-{cls}-✓"
        new.append(nid)
        edges += [[nid, m] for m in members]
        feats.append(x[y == cls].mean(axis=0).round(4).tolist())
    res = predict(
        ctx,
        {"nodes": new, "edges": edges, "features": feats},
        meta=out["artifacts"]["meta"],
        node_ids=new,
    )
    assert [p["label"] for p in res["predictions"]] == ["alpha", "beta", "gamma"]


def test_bad_extension_reports_every_problem(
    trained: tuple[InlineContext, Any], graph: dict[str, Any]
) -> None:
    ctx, out = trained
    ext = {
        "nodes": [graph["nodes"][0], 5, "fresh"],
        "edges": [["fresh", "ghost"], ["fresh", "fresh"]],
        "features": [[1.0]],
    }
    with pytest.raises(ValidationError) as err:
        predict(ctx, ext, meta=out["artifacts"]["meta"])
    locs = [d["loc"] for d in err.value.details]
    msgs = " | ".join(d["msg"] for d in err.value.details)
    assert ["nodes"] in locs and "mix integers and strings" in msgs
    with pytest.raises(ValidationError) as err:
        predict(ctx, {**ext, "nodes": [graph["nodes"][0], "fresh"]}, meta=out["artifacts"]["meta"])
    msgs = [(d["loc"], d["msg"]) for d in err.value.details]
    assert (["nodes", 0], f"node {graph['nodes'][0]!r} already exists in the graph") in msgs
    assert (["edges", 0], "edge ('fresh', 'ghost') references undeclared node 'ghost'") in msgs
    assert (["edges", 1], "edge is a self-loop (policy: error)") in msgs
    assert any(loc == ["features"] for loc, _ in msgs)


def test_unknown_predict_ids_are_named(trained: tuple[InlineContext, Any]) -> None:
    ctx, out = trained
    with pytest.raises(ValidationError) as err:
        predict(ctx, meta=out["artifacts"]["meta"], node_ids=["nope", "n-1-é", 7])
    assert [d["loc"] for d in err.value.details] == [["node_ids", 0], ["node_ids", 2]]


def test_models_service_registration_and_predict_by_name(graph: dict[str, Any]) -> None:
    book = ModelBook()
    ctx, out = train(graph, services={"models": book}, name="communities", epochs=5, kind="gcn")
    assert out["registered"] == "communities"
    rec = book.records["communities"]
    assert rec["backend"] == "graph" and rec["task_types"] == ["graph-predict"]
    assert rec["source"] == {"artifact": out["artifacts"]["weights"]}
    res = predict(ctx, model="communities", services={"models": book}, node_ids=graph["nodes"][:3])
    assert len(res["predictions"]) == 3
    # a second registration under the same name fails visibly, training still returns
    ctx2, out2 = train(graph, services={"models": book}, name="communities", epochs=2, kind="gcn")
    assert out2["registered"] is None
    assert any(
        d.get("level") == "warning" and "registration failed" in d["message"]
        for k, d in ctx2.events
        if k == "log"
    )
    with pytest.raises(ValidationError, match="no models service"):
        predict(ctx, model="communities")


def test_graph_from_artifact_and_invalid_graph_before_training(graph: dict[str, Any]) -> None:
    holder = InlineContext()
    art = holder.save_artifact(json.dumps(graph).encode(), media_type="application/json")
    ctx = InlineContext(
        input={"artifact": art["id"]}, params=GraphTrainParams(kind="gcn", epochs=2)
    )
    ctx.blobs.update(holder.blobs)
    out = TYPES["graph-train"].handler(ctx)
    assert out["epochs_run"] == 2
    bad = {**graph, "edges": [*graph["edges"], ["n-0-é", "zz"], ["n-1-é", "n-1-é"]]}
    ctx = InlineContext(input=bad, params=GraphTrainParams(epochs=2))
    with pytest.raises(ValidationError) as err:
        TYPES["graph-train"].handler(ctx)
    assert len(err.value.details) == 2
    assert not [k for k, _ in ctx.events if k == "progress"]


def test_sampled_and_async_modes_through_the_task(graph: dict[str, Any]) -> None:
    _, out = train(graph, mode="sampled", fanout=[5, 5], batch_size=16, epochs=10)
    assert out["nodes_per_second"] > 0 and out["metrics"]["test_acc"] >= 0.7
    assert out["time_breakdown"] == []  # one process: nothing to break down
    _, out = train(graph, mode="async", fanout=[5, 5], batch_size=16, epochs=10, workers=2)
    assert out["epochs_run"] == 10 and out["metrics"]["test_acc"] >= 0.7
    # both throughputs, and where each worker's time went (no collectives in async)
    assert 0 < out["wall_nodes_per_second"] <= out["nodes_per_second"] * 1.01
    assert [row["rank"] for row in out["time_breakdown"]] == [0.0, 1.0]
    assert all(row["compute"] > 0 and row["allreduce"] == 0 for row in out["time_breakdown"])
    json.dumps(out)  # the result crosses a process boundary as JSON


def test_params_validation() -> None:
    with pytest.raises(pydantic.ValidationError, match="one entry per layer"):
        GraphTrainParams(mode="sampled", layers=3, fanout=[10, 10])
    with pytest.raises(pydantic.ValidationError):
        GraphTrainParams(fanout=[0, 5])
    with pytest.raises(pydantic.ValidationError):
        GraphTrainParams(kind="transformer")
    assert GraphTrainParams(mode="full", layers=3).fanout == [10, 10]  # unused when full
