"""The ``explain`` task type: attributions for a registered model's predictions, with pictures.

The handler resolves what to explain (a model and inputs, or a finished task's prediction by
id), loads a gradient-capable copy of the model (serving copies run packed inference Linears,
which have no gradient), calls the family's explainer from :mod:`open_autoglm.ml.explain`,
and stores the pictures as artifacts linked from the result.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from open_autoglm.errors import ValidationError
from open_autoglm.tasks.base import TaskContext, TaskType

__all__ = ["ExplainParams", "explain_task_types"]

MAX_TEXTS = 256
MAX_NODES = 256


class ExplainParams(BaseModel):
    """Params of ``explain``. ``input`` holds texts (pairs for embedding models) or, for graph
    models, node ids (also accepted as ``node_ids``)."""

    model_config = ConfigDict(extra="forbid")

    task_id: str | None = Field(
        default=None, max_length=64, description="explain the prediction this finished task made"
    )
    method: Literal["integrated-gradients", "shap", "gnnexplainer"] = "integrated-gradients"
    target: str | int | None = Field(
        default=None, description="class to explain (label or index); default: the predicted one"
    )
    steps: int = Field(default=32, ge=2, le=256, description="integration steps")
    internal_batch_size: int = Field(
        default=16, ge=1, le=256, description="steps per forward pass (bounds memory)"
    )
    output: Literal["probability", "logit"] = "probability"
    pair: str | None = Field(default=None, max_length=20_000, description="embedding models")
    node_ids: list[int | str] | None = Field(default=None, max_length=MAX_NODES)
    top_k: int = Field(default=10, ge=1, le=100)
    seed: int = Field(default=0, ge=0)
    epochs: int = Field(default=100, ge=1, le=2000, description="GNNExplainer epochs")
    max_evals: int = Field(default=200, ge=10, le=5000, description="SHAP evaluations")
    pictures: bool = True


def _explained_task(ctx: TaskContext, task_id: str) -> tuple[str, Any, Any]:
    """(model, input, target) of a finished task, to explain the prediction it made."""
    task = ctx.service("tasks").get_as(task_id, ctx.task_id)
    if task["status"] != "succeeded":
        raise ValidationError(
            f"task {task_id} is {task['status']}; only a succeeded task's prediction is explained",
            details=[{"loc": ["params", "task_id"], "msg": f"status {task['status']}"}],
        )
    spec = task.get("spec") or {}
    model = spec.get("model") or task.get("model")
    if not model:
        raise ValidationError(
            f"task {task_id} used no model",
            details=[{"loc": ["params", "task_id"], "msg": "no model"}],
        )
    payload = spec.get("inputs") if spec.get("inputs") is not None else spec.get("input")
    target = None
    if task["task_type"] == "graph-predict":
        payload = (spec.get("params") or {}).get("node_ids") or payload
    result = task.get("result")
    if task["task_type"] == "text-classification" and isinstance(result, dict):
        first = (result.get("predictions") or [None])[0]
        if isinstance(first, list) and first:
            target = first[0].get("label")
    return str(model), payload, target


def _texts(payload: Any) -> list[Any]:
    texts = [payload] if isinstance(payload, str) else list(payload or [])
    if not texts:
        raise ValidationError(
            "nothing to explain",
            details=[{"loc": ["input"], "msg": "give a text or a list of texts"}],
        )
    if len(texts) > MAX_TEXTS:
        raise ValidationError(
            f"at most {MAX_TEXTS} texts per explain task",
            details=[{"loc": ["input"], "msg": f"{len(texts)} texts"}],
        )
    return texts


def _progress(ctx: TaskContext) -> Any:
    def report(done: int, total: int) -> None:
        ctx.check_cancelled()
        ctx.progress(done / total, f"explained {done} of {total}")

    return report


def _store_text_pictures(ctx: TaskContext, out: dict[str, Any], top_k: int) -> dict[str, str]:
    from open_autoglm.ml.explain.plots import bar_chart_png, token_heatmap_html, token_heatmap_png

    found = out["_attributions"]
    html_art = ctx.save_artifact(
        token_heatmap_html(found).encode(), media_type="text/html", name="token-heatmap.html"
    )
    png_art = ctx.save_artifact(
        token_heatmap_png(found[:8]), media_type="image/png", name="token-heatmap.png"
    )
    pictures = {"token_heatmap_html": html_art["id"], "token_heatmap_png": png_art["id"]}
    top = out.get("global", {}).get("top_tokens")
    if top is None and out["family"] == "text-classification":
        top = out["explanations"][0]["top_tokens"]
    if top:
        bars = ctx.save_artifact(
            bar_chart_png(top[:top_k], title="top tokens"), media_type="image/png",
            name="top-tokens.png",
        )  # fmt: skip
        pictures["top_tokens_png"] = bars["id"]
    return pictures


def _explain_text(ctx: TaskContext, params: ExplainParams, models: Any, spec: Any, payload: Any,
                  target: Any) -> dict[str, Any]:  # fmt: skip
    from open_autoglm.ml.explain.base import Family, explainer_for

    family = Family(spec.role) if spec.role in (f.value for f in Family) else None
    if family is None:
        raise ValidationError(
            f"no explainer for model {spec.name!r} (serves {spec.task_types})",
            details=[{"loc": ["model"], "msg": "text classifiers, embedding and graph models"}],
        )
    ctx.log(f"explaining {spec.name} ({family.value}) with {params.method}")
    with models.lease_for_gradients(spec.name) as loaded:  # counted in the model budget
        out = explainer_for(family)(
            loaded, _texts(payload), method=params.method, target=params.target if params.target
            is not None else target, steps=params.steps,
            internal_batch_size=params.internal_batch_size, output=params.output,
            max_evals=params.max_evals, seed=params.seed, top_k=params.top_k, pair=params.pair,
            on_text=_progress(ctx),
        )  # fmt: skip
    if params.pictures:
        out["pictures"] = _store_text_pictures(ctx, out, params.top_k)
    out.pop("_attributions", None)
    return out


def _explain_graph(ctx: TaskContext, params: ExplainParams, models: Any, spec: Any,
                   payload: Any) -> dict[str, Any]:  # fmt: skip
    from open_autoglm.ml.explain.base import Family, explainer_for
    from open_autoglm.ml.explain.plots import bar_chart_png, subgraph_png
    from open_autoglm.ml.graph.bundle import unpack_meta
    from open_autoglm.tasks.graph import load_trained_graph

    meta = unpack_meta(ctx.load_artifact(spec.config["meta_artifact"]))
    trained = load_trained_graph(meta, ctx.load_artifact)
    ids = params.node_ids or ([payload] if isinstance(payload, (int, str)) else list(payload or []))
    if not ids:
        raise ValidationError(
            "nothing to explain", details=[{"loc": ["params", "node_ids"], "msg": "give node ids"}]
        )
    if len(ids) > MAX_NODES:
        raise ValidationError(
            f"at most {MAX_NODES} nodes per explain task",
            details=[{"loc": ["params", "node_ids"], "msg": f"{len(ids)} nodes"}],
        )
    rows = trained.graph.index_of(ids)
    method = "gnnexplainer" if params.method == "gnnexplainer" else "integrated-gradients"
    ctx.log(f"explaining {spec.name} (graph) with {method}")
    out = explainer_for(Family.GRAPH)(
        trained.model, trained.x, trained.edge_index, [int(r) for r in rows],
        id_of=trained.graph.node_ids, layers=trained.config.layers, classes=trained.classes,
        method=method, steps=params.steps, epochs=params.epochs, seed=params.seed,
        top_k=params.top_k, on_text=_progress(ctx),
    )  # fmt: skip
    found = out.pop("_nodes")
    if params.pictures:
        first, node_id = found[0], out["explanations"][0]["node"]
        edges = [
            (
                trained.graph.node_ids[int(first.subset[a])],
                trained.graph.node_ids[int(first.subset[b])],
            )
            for a, b in first.edge_index.t().tolist()
        ]
        sub = ctx.save_artifact(
            subgraph_png(edges, first.edge_scores.tolist(), center=node_id,
                         title=f"why node {node_id} is {out['explanations'][0]['label']}"),
            media_type="image/png", name="subgraph.png",
        )  # fmt: skip
        top = out.get("global", out["explanations"][0])["top_features"]
        bars = ctx.save_artifact(
            bar_chart_png(top, title="top features"),
            media_type="image/png",
            name="top-features.png",
        )
        out["pictures"] = {"subgraph_png": sub["id"], "top_features_png": bars["id"]}
    return out


def _explain(ctx: TaskContext) -> dict[str, Any]:
    params = ctx.params
    if not isinstance(params, ExplainParams):
        params = ExplainParams.model_validate(params.model_dump())
    model, payload, target = ctx.model, ctx.input, None
    if params.task_id is not None:
        model, task_payload, target = _explained_task(ctx, params.task_id)
        payload = payload if payload is not None else task_payload
    if not model:
        raise ValidationError(
            "explain needs a model or params.task_id",
            details=[
                {"loc": ["model"], "msg": "name the model, or the task whose prediction to explain"}
            ],
        )
    models = ctx.service("models")
    spec = models.spec(model)
    if spec.backend.value == "graph":
        out = _explain_graph(ctx, params, models, spec, payload)
    else:
        out = _explain_text(ctx, params, models, spec, payload, target)
    out["model"] = model
    if params.task_id is not None:
        out["task_id"] = params.task_id
    return out


def explain_task_types() -> list[TaskType]:
    return [
        TaskType(
            name="explain",
            names_model=True,
            handler=_explain,
            params_model=ExplainParams,
            description=(
                "Explain a model's prediction: token attributions for text classifiers and "
                "embedding pairs, feature and edge attributions for graph nodes, with pictures."
            ),
        )
    ]
