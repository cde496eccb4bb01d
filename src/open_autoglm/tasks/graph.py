"""Graph task types: ``graph-train`` and ``graph-predict`` (node classification).

The handlers are thin: they resolve inputs through the context (artifacts, the models
service), then call plain functions (:func:`train_graph`, :func:`predict_graph`) that tests
and notebooks can use directly. Model math lives in :mod:`open_autoglm.ml.graph`; torch is
imported only when a handler runs.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from open_autoglm.errors import ValidationError
from open_autoglm.ml.training.spec import DistributedParams, Strategy
from open_autoglm.spec.graph import GraphData, GraphPolicy, NodeId, parse_graph
from open_autoglm.spec.model import ModelName
from open_autoglm.tasks.base import ExecutionMode, TaskContext, TaskType

if TYPE_CHECKING:
    from torch import Tensor, nn

    from open_autoglm.ml.graph.models import ModelConfig
    from open_autoglm.ml.graph.training import TrainResult

__all__ = [
    "GraphPredictParams",
    "GraphTrainParams",
    "LoadedGraphModel",
    "TrainedGraph",
    "graph_task_types",
    "load_trained_graph",
    "predict_graph",
    "resolve_graph_input",
    "train_graph",
]

ArtifactLoader = Callable[[str], bytes]
# the training-curves PNG: (y label, history keys) per panel
CURVE_PANELS = (("loss", ("loss", "val_loss")), ("accuracy", ("train_acc", "val_acc", "test_acc")))


class GraphTrainParams(BaseModel):
    """Params of ``graph-train``. ``fanout`` has one entry per layer (-1 = all neighbors)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["gcn", "sage", "gat"] = "gcn"
    layers: int = Field(default=2, ge=1, le=8)
    hidden: int = Field(default=16, ge=1, le=4096)
    heads: int = Field(default=8, ge=1, le=64, description="GAT heads per inner layer")
    dropout: float = Field(default=0.5, ge=0.0, lt=1.0)
    epochs: int = Field(default=200, ge=1, le=100_000)
    lr: float = Field(default=0.01, gt=0.0, le=10.0)
    weight_decay: float = Field(default=5e-4, ge=0.0, le=1.0)
    optimizer: Literal["adamw", "adam_l2"] = "adamw"
    patience: int = Field(default=0, ge=0, description="0 = no early stopping")
    mode: Literal["full", "sampled", "sync", "async"] = "full"
    fanout: list[int] = Field(default_factory=lambda: [10, 10])
    batch_size: int = Field(default=256, ge=1, le=1_000_000)
    workers: int = Field(default=2, ge=1, le=64)
    seed: int = Field(default=0, ge=0)
    normalize_features: bool = True
    self_loops: Literal["error", "drop", "keep"] = "error"
    duplicate_edges: Literal["error", "merge"] | None = Field(
        default=None, description="default: merge for .npz inputs, error for JSON"
    )
    # The registry name of the trained model: checked at submit, so a name the registry
    # would refuse (``../../x``) never costs a training run.
    name: ModelName | None = None
    distributed: DistributedParams = Field(
        default_factory=DistributedParams,
        description="ranks and precision on the training facility; mode sync = ddp x workers",
    )

    @model_validator(mode="after")
    def _fanout_matches_layers(self) -> GraphTrainParams:
        if any(f == 0 or f < -1 for f in self.fanout):
            raise ValueError("fanout entries must be >= 1, or -1 for all neighbors")
        if self.mode != "full" and len(self.fanout) != self.layers:
            raise ValueError(f"fanout needs one entry per layer ({self.layers}), got {self.fanout}")
        if self.mode == "async" and self.distributed != DistributedParams():
            raise ValueError("mode async (Hogwild) runs its own workers: leave `distributed` out")
        return self

    @property
    def facility(self) -> DistributedParams | None:
        """How the shared training facility runs this job, or None: async (Hogwild) and
        one-process fp32 full/sampled training run their own loops."""
        if self.mode == "async":
            return None
        if self.mode == "sync" and self.distributed.strategy is Strategy.NONE:
            return DistributedParams(
                strategy=Strategy.DDP,
                world_size=self.workers,
                precision=self.distributed.precision,
            )
        if self.mode != "sync" and self.distributed == DistributedParams():
            return None
        return self.distributed

    @property
    def cpus(self) -> float:
        if self.facility is not None:
            return self.facility.cpus
        return float(self.workers if self.mode == "async" else 1)

    @property
    def policy(self) -> GraphPolicy:
        return GraphPolicy(self_loops=self.self_loops, duplicate_edges=self.duplicate_edges)


class GraphPredictParams(BaseModel):
    """Params of ``graph-predict``: the model's meta artifact (or ``model`` by name) and nodes."""

    model_config = ConfigDict(extra="forbid")

    meta: str | None = Field(default=None, description="artifact id of the model meta JSON")
    node_ids: list[int | str] | None = Field(default=None, description="default: all nodes")


# ---------------------------------------------------------------- input resolution


def resolve_graph_input(
    raw: Any, load_artifact: ArtifactLoader, policy: GraphPolicy | None = None
) -> GraphData:
    """Validate an inline graph, or load ``{"artifact": id}`` (JSON or npz bytes)."""
    from open_autoglm.spec.graph_loaders import load_graph_npz

    if isinstance(raw, dict) and set(raw) == {"artifact"}:
        data = load_artifact(str(raw["artifact"]))
        if zipfile.is_zipfile(io.BytesIO(data)):
            return load_graph_npz(io.BytesIO(data), policy=policy)
        try:
            raw = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValidationError(
                "graph artifact is neither npz nor JSON",
                details=[{"loc": ["input", "artifact"], "msg": str(exc)}],
            ) from None
    return parse_graph(raw, policy=policy)


# ---------------------------------------------------------------- training


class TrainedGraph:
    """A trained model with what prediction needs: config, graph, normalisation, metrics."""

    def __init__(
        self, model: nn.Module, config: ModelConfig, graph: GraphData, result: TrainResult
    ) -> None:
        self.model = model
        self.config = config
        self.graph = graph
        self.result = result


def train_graph(
    graph: GraphData,
    params: GraphTrainParams,
    *,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    check_cancelled: Callable[[], None] | None = None,
    runner: Callable[[Any, DistributedParams], Any] | None = None,
) -> TrainedGraph:
    """Train a node classifier on a validated graph with ``params``.

    ``runner(job, dist)`` runs a job on the training facility; the default is the plain
    :func:`~open_autoglm.ml.training.fit.fit`, a task passes ``run_training`` (checkpoints).
    """
    import torch

    from open_autoglm.ml.graph.data import GraphTensors
    from open_autoglm.ml.graph.job import train_on_facility
    from open_autoglm.ml.graph.models import ModelConfig, ModelKind, build_model
    from open_autoglm.ml.graph.parallel import train_parallel
    from open_autoglm.ml.graph.training import TrainConfig, TrainMode, train_node_classifier

    if graph.labels is None or int((graph.labels >= 0).sum()) == 0:
        raise ValidationError(
            "graph-train needs labeled nodes", details=[{"loc": ["input", "labels"], "msg": "none"}]
        )
    data = GraphTensors.from_graph(graph, normalize=params.normalize_features, seed=params.seed)
    config = ModelConfig(
        kind=ModelKind(params.kind),
        in_dim=int(data.x.shape[1]),
        out_dim=data.num_classes,
        hidden=params.hidden,
        layers=params.layers,
        dropout=params.dropout,
        heads=params.heads,
    )
    cfg = TrainConfig(
        epochs=params.epochs,
        lr=params.lr,
        weight_decay=params.weight_decay,
        patience=params.patience,
        mode=TrainMode(params.mode),
        batch_size=params.batch_size,
        fanout=tuple(params.fanout),
        workers=params.workers,
        seed=params.seed,
        optimizer=params.optimizer,
    )
    torch.manual_seed(params.seed)
    model = build_model(config)
    dist = params.facility
    if dist is not None:
        result = train_on_facility(
            model, data, cfg, dist, runner, on_epoch=on_epoch, check_cancelled=check_cancelled
        )
    elif cfg.mode is TrainMode.ASYNC:
        result = train_parallel(
            model, data, cfg, on_epoch=on_epoch, check_cancelled=check_cancelled
        )
    else:
        result = train_node_classifier(
            model, data, cfg, on_epoch=on_epoch, check_cancelled=check_cancelled
        )
    return TrainedGraph(model, config, graph, result)


def _graph_train(ctx: TaskContext) -> dict[str, Any]:
    import torch

    from open_autoglm.ml.graph.bundle import pack_graph, pack_meta, pack_weights
    from open_autoglm.ml.training.task import curves_png

    params = ctx.params
    if not isinstance(params, GraphTrainParams):
        params = GraphTrainParams.model_validate(params.model_dump())
    torch.set_num_threads(max(1, ctx.cpu_threads))
    graph = resolve_graph_input(ctx.input, ctx.load_artifact, params.policy)
    ctx.log(f"graph: {graph.num_nodes} nodes, {graph.num_edges} edges, {graph.num_classes} classes")
    for note in graph.notes:
        ctx.log(f"graph input fixed under policy: {note['msg']}", level="warning")

    def on_epoch(epoch: int, m: dict[str, float]) -> None:
        ctx.progress(
            (epoch + 1) / params.epochs,
            f"epoch {epoch + 1}/{params.epochs}",
            epoch=epoch,
            loss=m["loss"],
            val_acc=m["val_acc"],
        )

    from open_autoglm.ml.training.task import run_training

    trained = train_graph(
        graph,
        params,
        on_epoch=on_epoch,
        check_cancelled=ctx.check_cancelled,
        runner=lambda job, dist: run_training(ctx, job, dist),
    )
    res = trained.result
    weights = ctx.save_artifact(
        pack_weights(res.state), media_type="application/x-safetensors", name="weights.safetensors"
    )
    graph_art = ctx.save_artifact(
        pack_graph(graph), media_type="application/x-npz", name="graph.npz"
    )
    curves = ctx.save_artifact(
        curves_png(res.history, CURVE_PANELS, title=f"{params.kind} ({params.mode})"),
        media_type="image/png",
        name="training_curves.png",
    )
    meta = {
        "format": "open-autoglm/graph-model/1",
        "model_config": trained.config.to_dict(),
        "normalize_features": params.normalize_features,
        "weights_artifact": weights["id"],
        "graph_artifact": graph_art["id"],
        "id_mapping": graph.to_mapping(),
        "train_params": params.model_dump(exclude={"name"}),
        "metrics": res.metrics,
    }
    meta_art = ctx.save_artifact(pack_meta(meta), media_type="application/json", name="model.json")
    out: dict[str, Any] = {
        "metrics": res.metrics,
        "best_epoch": res.best_epoch,
        "epochs_run": len(res.history),
        "nodes_per_second": res.nodes_per_second,
        "wall_nodes_per_second": res.extra.get("wall_nodes_per_s", res.nodes_per_second),
        # async: seconds per phase and worker (ml/graph/step_timing.py); else empty
        "time_breakdown": res.extra.get("breakdown", []),
        # on the training facility: the epoch a retried task resumed after, else None
        "resumed_from_epoch": res.extra.get("resumed_from_epoch"),
        "artifacts": {
            "weights": weights["id"],
            "meta": meta_art["id"],
            "graph": graph_art["id"],
            "curves": curves["id"],
        },
        "registered": None,
    }
    out["registered"] = _register(ctx, params, meta, weights["id"], meta_art["id"])
    return out


def _register(
    ctx: TaskContext, params: GraphTrainParams, meta: dict[str, Any], weights_id: str, meta_id: str
) -> str | None:
    from open_autoglm.ml.training.task import register_model

    return register_model(
        ctx,
        name=params.name or f"graph-{params.kind}-{ctx.task_id}",
        backend="graph",
        source={"artifact": weights_id},
        task_types=["graph-predict"],
        config={
            "meta_artifact": meta_id,
            "graph_artifact": meta["graph_artifact"],
            "model_config": meta["model_config"],
            "normalize_features": meta["normalize_features"],
        },
    )


# ---------------------------------------------------------------- prediction


@dataclass(frozen=True)
class LoadedGraphModel:
    """A stored graph model ready to run: weights loaded, features as the trainer saw them."""

    model: nn.Module
    config: ModelConfig
    graph: GraphData
    x: Tensor  # (nodes, features)
    edge_index: Tensor  # (2, E)

    @property
    def classes(self) -> list[Any]:
        return list(self.graph.label_names) or list(range(self.config.out_dim))


def load_trained_graph(
    meta: dict[str, Any], load_artifact: ArtifactLoader, *, extension: Any = None
) -> LoadedGraphModel:
    """Rebuild a stored model and its graph; ``extension`` adds nodes/edges/features first."""
    from open_autoglm.ml.graph.bundle import unpack_graph, unpack_weights
    from open_autoglm.ml.graph.data import GraphTensors
    from open_autoglm.ml.graph.models import ModelConfig, build_model
    from open_autoglm.spec.graph_extend import extend_graph

    config = ModelConfig.from_dict(meta["model_config"])
    graph = unpack_graph(load_artifact(meta["graph_artifact"]))
    if extension is not None:
        graph = extend_graph(graph, extension)
    data = GraphTensors.from_graph(graph, normalize=bool(meta.get("normalize_features", True)))
    model = build_model(config)
    model.load_state_dict(unpack_weights(load_artifact(meta["weights_artifact"])))
    model.eval()
    return LoadedGraphModel(model, config, graph, data.x, data.edge_index)


def predict_graph(
    meta: dict[str, Any],
    load_artifact: ArtifactLoader,
    *,
    node_ids: Sequence[NodeId] | None = None,
    extension: Any = None,
) -> dict[str, Any]:
    """Score nodes with a stored model; ``extension`` adds nodes/edges/features first."""
    import torch

    from open_autoglm.ml.graph.inference import predict_proba

    trained = load_trained_graph(meta, load_artifact, extension=extension)
    graph, config = trained.graph, trained.config
    rows = graph.index_of(node_ids) if node_ids is not None else None
    idx = torch.arange(graph.num_nodes) if rows is None else torch.from_numpy(rows).long()
    # requested ids: only their config.layers-hop neighbourhood runs through the model
    picked = predict_proba(
        trained.model, trained.x, trained.edge_index, config.layers, None if rows is None else idx
    )  # (requested, classes)
    names = trained.classes
    top = picked.argmax(dim=1).tolist()
    return {
        "classes": names,
        "predictions": [
            {
                "node": graph.node_ids[int(i)],
                "label": names[c],
                "probabilities": [round(float(p), 6) for p in row],
            }
            for i, c, row in zip(idx.tolist(), top, picked.tolist(), strict=True)
        ],
    }


def _resolve_meta(ctx: TaskContext, params: GraphPredictParams) -> dict[str, Any]:
    from open_autoglm.ml.graph.bundle import unpack_meta

    if params.meta is not None:
        return unpack_meta(ctx.load_artifact(params.meta))
    if not ctx.model:
        raise ValidationError(
            "graph-predict needs params.meta or a model name",
            details=[{"loc": ["params", "meta"], "msg": "give the meta artifact id or `model`"}],
        )
    try:
        models = ctx.service("models")
    except KeyError:
        raise ValidationError(
            f"model {ctx.model!r} given by name, but no models service is available here",
            details=[{"loc": ["model"], "msg": "pass params.meta (the model's meta artifact id)"}],
        ) from None
    record = models.get(ctx.model)
    config = record["config"] if isinstance(record, dict) else record.config
    return unpack_meta(ctx.load_artifact(config["meta_artifact"]))


def _graph_predict(ctx: TaskContext) -> dict[str, Any]:
    params = ctx.params
    if not isinstance(params, GraphPredictParams):
        params = GraphPredictParams.model_validate(params.model_dump())
    meta = _resolve_meta(ctx, params)
    return predict_graph(meta, ctx.load_artifact, node_ids=params.node_ids, extension=ctx.input)


def graph_task_types() -> list[TaskType]:
    return [
        TaskType(
            name="graph-train",
            handler=_graph_train,
            params_model=GraphTrainParams,
            description="Train a GCN, GraphSAGE or GAT node classifier on a graph.",
            requires_input=True,
            mode=ExecutionMode.PROCESS,
            # sync/async training runs `workers` processes, the facility one per rank
            resources_for=lambda p: {"cpu": p.cpus},
        ),
        TaskType(
            name="graph-predict",
            names_model=True,
            handler=_graph_predict,
            params_model=GraphPredictParams,
            description="Classify nodes with a trained graph model (GraphSAGE: new nodes too).",
            artifact_params=("meta",),
        ),
    ]
