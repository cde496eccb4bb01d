"""Multimodal task types: ``fusion-train`` and ``fusion-predict`` (text + tabular rows).

``fusion-train`` runs in a killable subprocess: it validates the table against the declared
schema (every problem at once, before anything is stored), embeds the text column with a
registered embedding model (cached by model and content, so a second run does not
re-embed), trains one fusion strategy or all of them side by side (``compare``), and stores
safetensors weights, a JSON meta (preprocessing state included) and a PNG comparing the
strategies, then registers the model. ``fusion-predict`` scores new rows with the model's
probabilities; it runs in-process so the text model comes from the platform's model cache.
Model math is in :mod:`open_autoglm.ml.multimodal`; torch is imported only when a handler
runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from open_autoglm.errors import AutoGLMError, ValidationError
from open_autoglm.ml.multimodal.fusion import strategy_names
from open_autoglm.ml.training.spec import DistributedParams
from open_autoglm.spec.table import TableData, TableSchema, validate_table
from open_autoglm.spec.table_loaders import resolve_table_input
from open_autoglm.tasks.base import ExecutionMode, TaskContext, TaskType

if TYPE_CHECKING:
    from open_autoglm.ml.multimodal.pipeline import FusionOptions, TrainedFusion
    from open_autoglm.ml.training.fit import FitResult
    from open_autoglm.ml.training.job import TrainJob

__all__ = [
    "COMPARE",
    "FusionPredictParams",
    "FusionTrainParams",
    "fusion_task_types",
    "load_text_embedder",
]

COMPARE = "compare"
"""The ``strategy`` that trains every registered strategy on one split, side by side."""

# the panels of each strategy's training-curves PNG: (y label, history keys)
CURVE_PANELS = (("loss", ("loss", "val_loss")), ("validation", ("val_accuracy", "val_macro_f1")))


class FusionTrainParams(BaseModel):
    """Params of ``fusion-train``: the table's schema, the strategy and the training knobs."""

    # ``schema`` is the name users write; the attribute avoids BaseModel's own ``schema``.
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    table_schema: TableSchema = Field(alias="schema")
    strategy: str = Field(default="hybrid", description="a fusion strategy, or 'compare'")
    text_model: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="registered embedding model for the text columns (needed when there are any)",
    )
    hidden: int = Field(default=128, ge=4, le=4096)
    shared: int = Field(default=64, ge=4, le=4096)
    category_dim: int = Field(default=16, ge=2, le=512)
    text_tokens: int = Field(default=4, ge=1, le=64)
    heads: int = Field(default=4, ge=1, le=64)
    dropout: float = Field(default=0.2, ge=0.0, lt=1.0)
    epochs: int = Field(default=30, ge=1, le=10_000)
    batch_size: int = Field(default=256, ge=1, le=65_536)
    lr: float = Field(default=2e-3, gt=0.0, le=10.0)
    weight_decay: float = Field(default=1e-4, ge=0.0, le=1.0)
    patience: int = Field(default=5, ge=0, description="0 = no early stopping")
    seed: int = Field(default=0, ge=0)
    val_fraction: float = Field(default=0.1, gt=0.0, lt=0.5)
    test_fraction: float = Field(default=0.2, gt=0.0, lt=0.5)
    min_category_count: int = Field(default=1, ge=1)
    cache_embeddings: bool = True
    name: str | None = Field(default=None, min_length=1, max_length=200)
    distributed: DistributedParams = Field(
        default_factory=DistributedParams,
        description="ranks and precision on the training facility (each strategy in turn)",
    )

    @field_validator("strategy")
    @classmethod
    def _known_strategy(cls, value: str) -> str:
        known = [*strategy_names(), COMPARE]
        if value not in known:
            raise ValueError(f"unknown strategy {value!r}; expected one of {known}")
        return value

    @model_validator(mode="after")
    def _text_needs_model(self) -> FusionTrainParams:
        if self.table_schema.text and self.text_model is None:
            raise ValueError("text columns are declared: name a registered embedding text_model")
        return self

    @property
    def strategies(self) -> list[str]:
        return strategy_names() if self.strategy == COMPARE else [self.strategy]

    def options(self) -> FusionOptions:
        from open_autoglm.ml.multimodal.pipeline import FusionOptions
        from open_autoglm.ml.multimodal.training import TrainSettings

        return FusionOptions(
            hidden=self.hidden,
            shared=self.shared,
            category_dim=self.category_dim,
            text_tokens=self.text_tokens,
            heads=self.heads,
            dropout=self.dropout,
            min_category_count=self.min_category_count,
            train=TrainSettings(
                epochs=self.epochs,
                batch_size=self.batch_size,
                lr=self.lr,
                weight_decay=self.weight_decay,
                patience=self.patience,
                seed=self.seed,
            ),
            val_fraction=self.val_fraction,
            test_fraction=self.test_fraction,
            split_seed=self.seed,
        )


class FusionPredictParams(BaseModel):
    """Params of ``fusion-predict``: the model's meta artifact, or ``model`` by name."""

    model_config = ConfigDict(extra="forbid")

    meta: str | None = Field(default=None, description="artifact id of the model meta JSON")


# ---------------------------------------------------------------- text embeddings


def _loader_entry(models: Any, name: str) -> dict[str, Any]:
    """The registry entry of embedding model ``name``, as the text loader takes it."""
    try:
        record = models.get(name)
    except AutoGLMError as exc:
        raise ValidationError(
            f"text model {name!r}: {exc.message}",
            details=[{"loc": ["params", "text_model"], "msg": exc.message}],
        ) from None
    if "embedding" not in record.get("task_types", []) or not isinstance(record.get("source"), str):
        raise ValidationError(
            f"text model {name!r} is not an embedding model with a local source",
            details=[{"loc": ["params", "text_model"], "msg": "register an embedding model"}],
        )
    options = dict(record.get("options") or {})
    options.pop("replicas", None)
    # Fixed layouts instead of a measurement at load: the column is embedded once, offline.
    options.setdefault("linear", "torch")
    options.setdefault("pack_tokens", 256)
    return {
        "name": name,
        "backend": "transformers",
        "source": record["source"],
        "task_types": ["embedding"],
        "dtype": record.get("dtype"),
        "options": options,
    }


def load_text_embedder(entry: dict[str, Any]) -> tuple[Any, str]:
    """Load an embedding model from a loader entry; returns it and its fingerprint."""
    from open_autoglm.ml.multimodal.embedding_cache import model_fingerprint
    from open_autoglm.ml.text.model_loader import TextModelLoader

    loader = TextModelLoader()
    embedder = loader.load(entry, role="embedding")
    directory = loader.resolve_directory(entry)
    fingerprint = model_fingerprint(
        directory, pooling=str(embedder.pooling.value), max_length=int(embedder.max_length)
    )
    return embedder, fingerprint


def _train_embeddings(
    ctx: TaskContext, params: FusionTrainParams, table: TableData
) -> tuple[Any, Any, dict[str, Any]]:
    """Text vectors (rows, dim) and presence (rows,) for training, through the cache."""
    import torch

    from open_autoglm.ml.multimodal.embedding_cache import EmbeddingCache, IndexedArtifactStore
    from open_autoglm.ml.multimodal.text_embedding import embed_texts
    from open_autoglm.ml.text.model_loader import default_cache_dir

    if not table.schema.text or params.text_model is None:
        return torch.zeros((table.num_rows, 0)), torch.zeros(table.num_rows, dtype=torch.bool), {}
    try:
        models = ctx.service("models")
    except KeyError:
        raise ValidationError(
            "a text model is named, but no models service is available here",
            details=[{"loc": ["params", "text_model"], "msg": "run through the platform"}],
        ) from None
    entry = _loader_entry(models, params.text_model)
    embedder, fingerprint = load_text_embedder(entry)
    cache = None
    if params.cache_embeddings:
        store = IndexedArtifactStore(
            default_cache_dir() / "fusion-embeddings",
            save=lambda data: ctx.save_artifact(
                data, media_type="application/x-safetensors", name="text-embeddings.safetensors"
            ),
            load=ctx.load_artifact,
        )
        cache = EmbeddingCache(store, fingerprint)

    def on_progress(done: int, total: int) -> None:
        ctx.progress(0.3 * done / max(total, 1), f"embedding texts {done}/{total}")

    vectors, present = embed_texts(
        embedder,
        table.texts,
        cache=cache,
        on_progress=on_progress,
        check_cancelled=ctx.check_cancelled,
    )
    info = {
        "model": params.text_model,
        "fingerprint": fingerprint,
        "dimension": int(vectors.shape[1]),
        "cache": "off" if cache is None else ("hit" if cache.hits else "miss"),
        "rows_without_text": int((~present).sum()),
    }
    if cache is not None and cache.last_location:
        info["artifact"] = cache.last_location
    return vectors, present, info


# ---------------------------------------------------------------- training


def _resolve_table(ctx: TaskContext, schema: TableSchema, *, require_label: bool) -> TableData:
    columns = resolve_table_input(ctx.input, ctx.load_artifact)
    return validate_table(columns, schema, require_label=require_label)


def _check_strategies(params: FusionTrainParams) -> None:
    """Reject a strategy the schema cannot feed before any embedding or training runs."""
    schema = params.table_schema
    has = {"text": bool(schema.text), "tabular": bool(schema.categorical or schema.numeric)}
    problems = []
    from open_autoglm.ml.multimodal.fusion import strategy_class

    for name in params.strategies:
        for modality in sorted(strategy_class(name).needs):
            if not has[modality]:
                problems.append(
                    {
                        "loc": ["params", "schema"],
                        "msg": f"strategy {name!r} needs {modality} columns",
                    }
                )
    if problems:
        raise ValidationError("the schema cannot feed the strategy", details=problems)


def _fusion_train(ctx: TaskContext) -> dict[str, Any]:
    import torch

    from open_autoglm.ml.multimodal.bundle import pack_meta, pack_weights
    from open_autoglm.ml.multimodal.comparison_plot import plot_comparison
    from open_autoglm.ml.multimodal.pipeline import train_strategies

    params = ctx.params
    if not isinstance(params, FusionTrainParams):
        params = FusionTrainParams.model_validate(params.model_dump(by_alias=True))
    torch.set_num_threads(max(1, ctx.cpu_threads))
    # Everything about the request is checked before anything is stored.
    table = _resolve_table(ctx, params.table_schema, require_label=True)
    _check_strategies(params)
    ctx.log(f"table: {table.num_rows} rows, {len(table.classes())} classes")
    vectors, present, text_info = _train_embeddings(ctx, params, table)
    if text_info:
        ctx.log(f"text embeddings: {text_info['cache']} ({text_info['dimension']} dims)")

    from open_autoglm.ml.training.task import curves_png, run_training

    strategies = params.strategies

    def runner(job: TrainJob, dist: DistributedParams) -> FitResult:
        k = strategies.index(job.name)  # embedding took the first 30 %, each strategy a share
        span = (0.3 + 0.7 * k / len(strategies), 0.3 + 0.7 * (k + 1) / len(strategies))
        return run_training(ctx, job, dist, span=span, tags={"strategy": job.name})

    trained = train_strategies(
        table,
        vectors,
        present,
        strategies,
        params.options(),
        dist=params.distributed,
        runner=runner,
        check_cancelled=ctx.check_cancelled,
    )
    results: dict[str, Any] = {}
    metas: dict[str, dict[str, Any]] = {}
    for name, t in trained.items():
        weights = ctx.save_artifact(
            pack_weights(t.model.state_dict()),
            media_type="application/x-safetensors",
            name=f"{name}.safetensors",
        )
        meta = _meta(params, t, weights["id"], text_info)
        meta_art = ctx.save_artifact(
            pack_meta(meta), media_type="application/json", name=f"{name}.json"
        )
        metas[name] = {**meta, "meta_artifact": meta_art["id"]}
        curves = ctx.save_artifact(
            curves_png(t.history, CURVE_PANELS, title=f"{name} fusion"),
            media_type="image/png",
            name=f"{name}-training_curves.png",
        )
        results[name] = {
            "metrics": t.metrics,
            "best_epoch": t.best_epoch,
            "epochs_run": len(t.history),
            "fit_seconds": round(t.fit_seconds, 3),
            "val_accuracy": t.history[t.best_epoch]["val_accuracy"],
            "artifacts": {
                "weights": weights["id"],
                "meta": meta_art["id"],
                "curves": curves["id"],
            },
        }
    chosen = max(results, key=lambda n: results[n]["val_accuracy"])
    plot = ctx.save_artifact(
        plot_comparison(
            {n: r["metrics"] for n, r in results.items()},
            title=f"fusion strategies on {table.num_rows} rows (test split)",
        ),
        media_type="image/png",
        name="comparison.png",
    )
    registered = _register(ctx, params, chosen, metas[chosen])
    return {
        "strategy": params.strategy,
        "chosen": chosen,
        "results": results,
        "classes": trained[chosen].preprocessor.classes,
        "rows": table.num_rows,
        "text_embeddings": text_info,
        "artifacts": {**results[chosen]["artifacts"], "comparison": plot["id"]},
        "registered": registered,
    }


def _meta(
    params: FusionTrainParams, t: TrainedFusion, weights_id: str, text_info: dict[str, Any]
) -> dict[str, Any]:
    return {
        "strategy": t.strategy,
        "model_config": t.config.to_dict(),
        "preprocess": t.preprocessor.to_dict(),
        "text_model": params.text_model,
        "text_fingerprint": text_info.get("fingerprint"),
        "weights_artifact": weights_id,
        "metrics": t.metrics,
        "train_params": params.model_dump(mode="json", by_alias=True, exclude={"name"}),
    }


def _register(
    ctx: TaskContext, params: FusionTrainParams, strategy: str, meta: dict[str, Any]
) -> str | None:
    from open_autoglm.ml.training.task import register_model

    return register_model(
        ctx,
        name=params.name or f"fusion-{strategy}-{ctx.task_id}",
        backend="fusion",
        source={"artifact": meta["weights_artifact"]},
        task_types=["fusion-predict"],
        config={
            "meta_artifact": meta["meta_artifact"],
            "strategy": strategy,
            "text_model": meta["text_model"],
        },
    )


# ---------------------------------------------------------------- prediction


def _resolve_meta(ctx: TaskContext, params: FusionPredictParams) -> dict[str, Any]:
    from open_autoglm.ml.multimodal.bundle import unpack_meta

    if params.meta is not None:
        return unpack_meta(ctx.load_artifact(params.meta))
    if not ctx.model:
        raise ValidationError(
            "fusion-predict needs params.meta or a model name",
            details=[{"loc": ["params", "meta"], "msg": "give the meta artifact id or `model`"}],
        )
    record = ctx.service("models").get(ctx.model)
    config = record["config"] if isinstance(record, dict) else record.config
    if "meta_artifact" not in (config or {}):
        raise ValidationError(
            f"model {ctx.model!r} is not a fusion model",
            details=[{"loc": ["model"], "msg": "name a model fusion-train registered"}],
        )
    return unpack_meta(ctx.load_artifact(config["meta_artifact"]))


def _predict_embeddings(
    ctx: TaskContext, meta: dict[str, Any], table: TableData
) -> tuple[Any, Any]:
    import torch

    from open_autoglm.ml.multimodal.text_embedding import embed_texts

    if not table.schema.text:
        return torch.zeros((table.num_rows, 0)), torch.zeros(table.num_rows, dtype=torch.bool)
    dimension = int(meta["model_config"]["text_dim"])
    with ctx.service("models").lease(meta["text_model"]) as model:
        return embed_texts(_Embeds(model, dimension), table.texts)


class _Embeds:
    """Any leased embedding model (in-process or a replica pool) as ``embed(texts)``."""

    def __init__(self, model: Any, dimension: int) -> None:
        self.model = model
        self.dimension = dimension

    def embed(self, texts: list[str]) -> Any:
        import numpy as np
        import torch

        vectors, _ = self.model.embed_with_usage(texts)
        if isinstance(vectors, torch.Tensor):
            return vectors.float()
        return torch.tensor(np.asarray(vectors), dtype=torch.float32)  # a replica pool: numpy


def predict_rows(
    meta: dict[str, Any],
    load_artifact: Callable[[str], bytes],
    table: TableData,
    text: Any,
    text_present: Any,
) -> dict[str, Any]:
    """Probabilities of a stored fusion model for the rows of ``table``."""
    from open_autoglm.ml.multimodal.batch import FusionConfig
    from open_autoglm.ml.multimodal.bundle import unpack_weights
    from open_autoglm.ml.multimodal.pipeline import predict_table
    from open_autoglm.ml.multimodal.preprocess import Preprocessor

    pre = Preprocessor.from_dict(meta["preprocess"])
    config = FusionConfig.from_dict(meta["model_config"])
    state = unpack_weights(load_artifact(meta["weights_artifact"]))
    proba = predict_table(meta["strategy"], config, pre, state, table, text, text_present)
    top = proba.argmax(dim=1).tolist()
    return {
        "strategy": meta["strategy"],
        "classes": pre.classes,
        "predictions": [
            {
                "row": i,
                "label": pre.classes[c],
                "probabilities": [round(float(p), 6) for p in row],
            }
            for i, (c, row) in enumerate(zip(top, proba.tolist(), strict=True))
        ],
    }


def _fusion_predict(ctx: TaskContext) -> dict[str, Any]:
    from open_autoglm.ml.multimodal.preprocess import Preprocessor

    params = ctx.params
    if not isinstance(params, FusionPredictParams):
        params = FusionPredictParams.model_validate(params.model_dump())
    meta = _resolve_meta(ctx, params)
    schema = Preprocessor.from_dict(meta["preprocess"]).schema
    table = _resolve_table(ctx, schema, require_label=False)
    text, present = _predict_embeddings(ctx, meta, table)
    return predict_rows(meta, ctx.load_artifact, table, text, present)


def fusion_task_types() -> list[TaskType]:
    return [
        TaskType(
            name="fusion-train",
            handler=_fusion_train,
            params_model=FusionTrainParams,
            description="Train early, late or hybrid fusion of text and tabular columns "
            "(or compare them with text-only and tabular-only on one split).",
            requires_input=True,
            mode=ExecutionMode.PROCESS,
            resources_for=lambda p: {"cpu": p.distributed.cpus},
            model_params=("text_model",),
        ),
        TaskType(
            name="fusion-predict",
            names_model=True,
            handler=_fusion_predict,
            params_model=FusionPredictParams,
            description="Classify table rows with a trained fusion model (with probabilities).",
            requires_input=True,
        ),
    ]
