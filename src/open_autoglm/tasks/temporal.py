"""Temporal task types: ``temporal-train`` and ``temporal-predict`` (link prediction).

As with the graph tasks, the handlers resolve inputs through the context and call plain
functions (:func:`train_temporal`, :func:`predict_temporal`) that tests and notebooks can use
directly. A trained model is its meta JSON, its weights (safetensors; EdgeBank has none), its
id map and its event store; ``temporal-predict`` can append events to a registered model's
store, and every later prediction uses them as history. Model math lives in
:mod:`open_autoglm.ml.temporal`; torch is imported only when a handler runs.
"""

from __future__ import annotations

import contextlib
import io
import json
import threading
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from open_autoglm.errors import ValidationError
from open_autoglm.ml.training.spec import DistributedParams, Precision, Strategy
from open_autoglm.spec.events import EventPolicy, EventStream, OrderPolicy, parse_events
from open_autoglm.spec.graph import NodeId
from open_autoglm.tasks.base import ExecutionMode, TaskContext, TaskType

if TYPE_CHECKING:
    from open_autoglm.ml.temporal.training import TemporalTrainResult

__all__ = [
    "LinkQuery",
    "TemporalPredictParams",
    "TemporalTrainParams",
    "TopKQuery",
    "TrainedTemporal",
    "predict_temporal",
    "resolve_event_input",
    "temporal_task_types",
    "train_temporal",
]

ArtifactLoader = Callable[[str], bytes]
META_FORMAT = "open-autoglm/temporal-model/1"
# the training-curves PNG: (y label, history keys) per panel
CURVE_PANELS = (("loss", ("loss",)), ("validation", ("val_ap", "val_auc")))


# Why each kind trains in one process: the reason a refused ``distributed.strategy`` gives.
_NO_RANKS = {
    "tgn": "TGN's node memory is updated batch after batch in event order, and the next batch "
    "reads it; ranks splitting a batch would each miss the other's updates, which is not the "
    "same computation, so TGN trains in one process (strategy none)",
    "tgat": "TGAT's negatives and DropEdge come from one random stream walked in event order, "
    "which ranks with streams of their own would not reproduce; for now it trains in one "
    "process (strategy none)",
    "edgebank": "EdgeBank has no weights to train (strategy none)",
}


class TemporalTrainParams(BaseModel):
    """Params of ``temporal-train``. EdgeBank takes none of the training settings."""

    model_config = ConfigDict(extra="forbid")

    kind: str = Field(default="tgn", pattern="^(tgat|tgn|edgebank)$")
    epochs: int = Field(default=10, ge=1, le=10_000)
    lr: float = Field(default=1e-3, gt=0.0, le=1.0)
    weight_decay: float = Field(default=1e-4, ge=0.0, le=1.0)
    batch_size: int = Field(default=200, ge=1, le=100_000)
    patience: int = Field(default=3, ge=0, description="0 = no early stopping")
    dim: int = Field(default=100, ge=2, le=4096)
    time_dim: int = Field(default=100, ge=2, le=4096)
    layers: int = Field(default=1, ge=1, le=2, description="TGAT attention layers")
    heads: int = Field(default=2, ge=1, le=16)
    neighbors: int = Field(default=10, ge=1, le=200)
    strategy: str = Field(default="recent", pattern="^(recent|uniform)$")
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0)
    drop_edge: float = Field(default=0.1, ge=0.0, le=0.5, description="time-aware DropEdge")
    cooccurrence: bool = True
    window: float | None = Field(default=None, gt=0, description="EdgeBank time window")
    seed: int = Field(default=0, ge=0)
    unsorted: OrderPolicy = OrderPolicy.SORT
    name: str | None = Field(default=None, min_length=1, max_length=200)
    distributed: DistributedParams = Field(
        default_factory=DistributedParams,
        description="temporal models train in one process, in fp32 (see the refusals' reasons)",
    )

    @field_validator("distributed")
    @classmethod
    def _one_process(cls, d: DistributedParams, info: ValidationInfo) -> DistributedParams:
        if d.strategy is not Strategy.NONE:
            kind = str(info.data.get("kind", "tgn"))  # absent: its own error is reported
            raise ValueError(f"strategy {d.strategy.value} refused: {_NO_RANKS[kind]}")
        if d.precision is not Precision.FP32:
            raise ValueError(
                "precision bf16 refused: temporal models train in fp32, since the time "
                "encoding cos(t*w) of large timestamps keeps no useful digits in bfloat16"
            )
        return d

    @model_validator(mode="after")
    def _heads_divide(self) -> TemporalTrainParams:
        if self.kind == "tgat" and (self.dim + self.time_dim) % self.heads:
            raise ValueError(f"dim + time_dim ({self.dim + self.time_dim}) must divide by heads")
        if self.kind == "tgn" and self.dim % 2:
            raise ValueError("TGN's dim must be even (two attention heads)")
        return self


class LinkQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    src: NodeId
    dst: NodeId
    t: float = Field(allow_inf_nan=False)


class TopKQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    src: NodeId
    t: float = Field(allow_inf_nan=False)
    k: int = Field(default=10, ge=1, le=1000)


class TemporalPredictParams(BaseModel):
    """Params of ``temporal-predict``: the model (``meta`` artifact or ``model`` by name),
    events to ``append`` to its store first, then ``links`` and/or ``top_k`` queries."""

    model_config = ConfigDict(extra="forbid")

    meta: str | None = Field(default=None, description="artifact id of the model meta JSON")
    append: list[Any] | None = Field(default=None, max_length=100_000)
    links: list[LinkQuery] = Field(default_factory=list, max_length=100_000)
    top_k: list[TopKQuery] = Field(default_factory=list, max_length=100)


# ---------------------------------------------------------------- input resolution


def resolve_event_input(
    raw: Any, load_artifact: ArtifactLoader, policy: EventPolicy | None = None
) -> EventStream:
    """Validate an inline stream, or load ``{"artifact": id}`` (npz, Parquet, JSON or CSV)."""
    from open_autoglm.spec.event_loaders import (
        load_events_npz,
        load_events_parquet,
        load_events_text,
    )

    if isinstance(raw, dict) and set(raw) == {"artifact"}:
        data = load_artifact(str(raw["artifact"]))
        if zipfile.is_zipfile(io.BytesIO(data)):
            return load_events_npz(io.BytesIO(data), policy=policy)
        if data[:4] == b"PAR1":
            return load_events_parquet(io.BytesIO(data), policy=policy)
        try:
            raw = json.loads(data.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise ValidationError(
                "event artifact is not npz, Parquet, JSON or text",
                details=[{"loc": ["input", "artifact"], "msg": str(exc)}],
            ) from None
        except json.JSONDecodeError:
            return load_events_text(io.BytesIO(data), policy=policy)
    return parse_events(raw, policy=policy)


# ---------------------------------------------------------------- training


@dataclass
class TrainedTemporal:
    """What a training run produced: meta (config, metrics), weights, the validated stream."""

    meta: dict[str, Any]
    weights: dict[str, Any] | None
    stream: EventStream
    result: TemporalTrainResult | None


def _model_config(stream: EventStream, p: TemporalTrainParams) -> dict[str, Any]:
    from open_autoglm.ml.temporal.models import TemporalModelConfig, TemporalModelKind

    return TemporalModelConfig(
        kind=TemporalModelKind(p.kind), num_nodes=stream.num_nodes,
        edge_dim=max(stream.edge_dim, 1), dim=p.dim, time_dim=p.time_dim, layers=p.layers,
        heads=p.heads, neighbors=p.neighbors, strategy=p.strategy, dropout=p.dropout,
        drop_edge=p.drop_edge, cooccurrence=p.cooccurrence,
    ).to_dict()  # fmt: skip


def train_temporal(
    stream: EventStream,
    params: TemporalTrainParams,
    *,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    check_cancelled: Callable[[], None] | None = None,
) -> TrainedTemporal:
    """Train (or, for EdgeBank, just evaluate) a link predictor on a validated stream."""
    import torch

    from open_autoglm.ml.temporal.evaluation import EdgeBankScorer, ModuleScorer, evaluate_split
    from open_autoglm.ml.temporal.models import TemporalModelConfig, build_temporal_model
    from open_autoglm.ml.temporal.split import chronological_split
    from open_autoglm.ml.temporal.training import (
        TemporalTrainConfig,
        model_weights,
        train_link_predictor,
    )

    if stream.num_events < 20:
        raise ValidationError(
            "temporal-train needs at least 20 events for a chronological split",
            details=[{"loc": ["input", "events"], "msg": f"got {stream.num_events}"}],
        )
    split = chronological_split(stream, seed=2020 + params.seed)
    config = _model_config(stream, params)
    result = None
    weights = None
    if params.kind == "edgebank":
        scorer: Any = EdgeBankScorer(params.window)
    else:
        torch.manual_seed(params.seed)
        model = build_temporal_model(TemporalModelConfig.from_dict(config))
        cfg = TemporalTrainConfig(
            epochs=params.epochs, lr=params.lr, weight_decay=params.weight_decay,
            batch_size=params.batch_size, patience=params.patience, seed=params.seed,
        )  # fmt: skip
        result = train_link_predictor(
            model, stream, split, cfg, on_epoch=on_epoch, check_cancelled=check_cancelled
        )
        weights = model_weights(model)
        scorer = ModuleScorer(model)
    metrics = evaluate_split(
        scorer, stream, split, batch_size=params.batch_size, seed=params.seed,
        check_cancelled=check_cancelled,
    )  # fmt: skip
    meta: dict[str, Any] = {
        "format": META_FORMAT,
        "model_config": config,
        "window": params.window,
        "metrics": {k: round(v, 6) for k, v in metrics.items()},
        "train_params": params.model_dump(mode="json", exclude={"name"}),
    }
    return TrainedTemporal(meta, weights, stream, result)


def _temporal_train(ctx: TaskContext) -> dict[str, Any]:
    import torch

    from open_autoglm.ml.graph.bundle import pack_meta, pack_weights
    from open_autoglm.ml.temporal.bundle import pack_events
    from open_autoglm.ml.training.task import curves_png

    params = ctx.params
    if not isinstance(params, TemporalTrainParams):
        params = TemporalTrainParams.model_validate(params.model_dump())
    torch.set_num_threads(max(1, ctx.cpu_threads))
    stream = resolve_event_input(
        ctx.input, ctx.load_artifact, EventPolicy(unsorted=params.unsorted)
    )
    ctx.log(
        f"stream: {stream.num_events} events, {stream.num_nodes} nodes, edge features {stream.edge_dim}"
    )
    for note in stream.notes:
        ctx.log(f"stream fixed under policy: {note['msg']}", level="warning")

    def on_epoch(epoch: int, m: dict[str, float]) -> None:
        ctx.progress(
            (epoch + 1) / params.epochs,
            f"epoch {epoch + 1}/{params.epochs}",
            epoch=epoch,
            loss=m["loss"],
            val_ap=m["val_ap"],
            events_per_s=m["events_per_s"],
        )

    trained = train_temporal(stream, params, on_epoch=on_epoch, check_cancelled=ctx.check_cancelled)
    meta = trained.meta
    arts: dict[str, str] = {}
    arts["events"] = ctx.save_artifact(
        pack_events(stream), media_type="application/x-npz", name="events.npz"
    )["id"]
    arts["id_map"] = ctx.save_artifact(
        json.dumps(stream.to_mapping(), ensure_ascii=False).encode("utf-8"),
        media_type="application/json",
        name="id_map.json",
    )["id"]
    if trained.weights is not None and trained.result is not None:
        arts["weights"] = ctx.save_artifact(
            pack_weights(trained.weights),
            media_type="application/x-safetensors",
            name="weights.safetensors",
        )["id"]
        arts["curves"] = ctx.save_artifact(
            curves_png(trained.result.history, CURVE_PANELS, title=params.kind),
            media_type="image/png",
            name="training_curves.png",
        )["id"]
    meta["weights_artifact"] = arts.get("weights")
    meta["id_map_artifact"] = arts["id_map"]
    meta["events_artifact"] = arts["events"]
    arts["meta"] = ctx.save_artifact(
        pack_meta(meta), media_type="application/json", name="model.json"
    )["id"]
    res = trained.result
    return {
        "metrics": meta["metrics"],
        "best_epoch": res.best_epoch if res else None,
        "epochs_run": len(res.history) if res else 0,
        "events_per_second": res.events_per_second if res else None,
        "artifacts": arts,
        "registered": _register(ctx, params, arts),
    }


def _register(ctx: TaskContext, params: TemporalTrainParams, arts: dict[str, str]) -> str | None:
    from open_autoglm.ml.training.task import register_model

    return register_model(
        ctx,
        name=params.name or f"temporal-{params.kind}-{ctx.task_id}",
        backend="temporal",
        source={"artifact": arts.get("weights") or arts["events"]},
        task_types=["temporal-predict"],
        config={"meta_artifact": arts["meta"], "events_artifact": arts["events"]},
    )


# ---------------------------------------------------------------- prediction


def predict_temporal(
    meta: dict[str, Any],
    store: EventStream,
    load_artifact: ArtifactLoader,
    *,
    links: list[LinkQuery],
    top_k: list[TopKQuery],
) -> dict[str, Any]:
    """Answer link and top-k queries from the model and the events in ``store``."""
    import numpy as np

    from open_autoglm.ml.graph.bundle import unpack_weights
    from open_autoglm.ml.temporal.inference import build_scorer, score_links, top_k_destinations

    weights = (
        unpack_weights(load_artifact(meta["weights_artifact"]))
        if meta.get("weights_artifact")
        else None
    )
    scorer = build_scorer(meta["model_config"], store, weights, meta.get("window"))
    out: dict[str, Any] = {"events_in_store": store.num_events}
    if links:
        src = store.index_of([q.src for q in links], loc="links")
        dst = store.index_of([q.dst for q in links], loc="links")
        t = np.asarray([q.t for q in links], dtype=np.float64)
        probs = score_links(scorer, store, src, dst, t)
        out["links"] = [
            {"src": q.src, "dst": q.dst, "t": q.t, "probability": round(float(p), 6)}
            for q, p in zip(links, probs, strict=True)
        ]
    if top_k:
        out["top_k"] = []
        for q in top_k:
            (s,) = store.index_of([q.src], loc="top_k")
            best = top_k_destinations(scorer, store, int(s), q.t, q.k)
            out["top_k"].append(
                {
                    "src": q.src,
                    "t": q.t,
                    "destinations": [
                        {"dst": store.node_ids[i], "probability": round(p, 6)} for i, p in best
                    ],
                }
            )
    return out


# Appends read the store, merge and re-register: serialise them within this process.
_APPEND_LOCK = threading.Lock()


def _resolve(ctx: TaskContext, params: TemporalPredictParams) -> tuple[dict[str, Any], str, Any]:
    """(meta, events artifact id, models service or None)."""
    from open_autoglm.ml.graph.bundle import unpack_meta

    if params.meta is not None:
        meta = unpack_meta(ctx.load_artifact(params.meta))
        return meta, _events_of(ctx, meta), None
    if not ctx.model:
        raise ValidationError(
            "temporal-predict needs params.meta or a model name",
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
    if "events_artifact" not in config:
        raise ValidationError(
            f"model {ctx.model!r} is not a temporal model",
            details=[{"loc": ["model"], "msg": "registered without an event store"}],
        )
    return (
        unpack_meta(ctx.load_artifact(config["meta_artifact"])),
        config["events_artifact"],
        models,
    )


def _events_of(ctx: TaskContext, meta: dict[str, Any]) -> str:
    if "events_artifact" not in meta:
        raise ValidationError(
            "meta artifact names no event store",
            details=[{"loc": ["params", "meta"], "msg": "not a temporal model meta"}],
        )
    return str(meta["events_artifact"])


def _temporal_predict(ctx: TaskContext) -> dict[str, Any]:
    from open_autoglm.ml.temporal.bundle import append_events, pack_events, unpack_events

    params = ctx.params
    if not isinstance(params, TemporalPredictParams):
        params = TemporalPredictParams.model_validate(params.model_dump())
    if not (params.append or params.links or params.top_k):
        raise ValidationError(
            "temporal-predict needs links, top_k or append",
            details=[{"loc": ["params"], "msg": "nothing to do"}],
        )
    with _APPEND_LOCK if params.append else contextlib.nullcontext():
        meta, events_id, models = _resolve(ctx, params)
        store = unpack_events(ctx.load_artifact(events_id))
        appended = None
        if params.append:
            if models is None:
                raise ValidationError(
                    "append needs a registered model (give `model`, not params.meta)",
                    details=[{"loc": ["params", "append"], "msg": "no registry entry to update"}],
                )
            try:
                new = parse_events({"events": params.append})
            except ValidationError as exc:
                raise ValidationError(
                    f"appended events: {exc.message}",
                    details=[
                        {**d, "loc": ["params", "append", *d["loc"][1:]]} for d in exc.details
                    ],
                ) from None
            store = append_events(store, new)
            events_id = ctx.save_artifact(
                pack_events(store), media_type="application/x-npz", name="events.npz"
            )["id"]
            record = models.get(ctx.model)
            config = dict(record["config"])
            config["events_artifact"] = events_id
            models.register(
                replace=True,
                name=ctx.model,
                backend=record["backend"],
                source=record["source"],
                task_types=record["task_types"],
                config=config,
            )
            appended = new.num_events
    out = predict_temporal(meta, store, ctx.load_artifact, links=params.links, top_k=params.top_k)
    if appended is not None:
        out["appended"] = appended
        out["events_artifact"] = events_id
    return out


def temporal_task_types() -> list[TaskType]:
    return [
        TaskType(
            name="temporal-train",
            handler=_temporal_train,
            params_model=TemporalTrainParams,
            description="Train a TGAT, TGN or EdgeBank link predictor on an event stream.",
            requires_input=True,
            mode=ExecutionMode.PROCESS,
            resources_for=lambda p: {"cpu": p.distributed.cpus},
        ),
        TaskType(
            name="temporal-predict",
            names_model=True,
            handler=_temporal_predict,
            params_model=TemporalPredictParams,
            description="Link probabilities and top-k destinations at given times; "
            "append events to a model's store.",
        ),
    ]
