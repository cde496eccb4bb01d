"""``text-classifier-train``: fine-tune a registered encoder with a classification head.

The handler resolves the table (inline rows or an artifact) and the base model through the
context, checks the data (every problem at once), splits it, tokenises it with the model's
own tokenizer and hands a :class:`~open_autoglm.ml.text.finetune.job.TextClassifierJob` to
the shared training facility (distribution, precision, checkpoints, progress). The best
epoch's weights are scored on the test rows, written as a model directory of safetensors and
tokenizer files, and registered as a ``text-classification`` model, which the existing
replicas and ``/v1/infer`` serve with no other step.
"""

from __future__ import annotations

import enum
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from open_autoglm.errors import AutoGLMError, ValidationError
from open_autoglm.ml.text.finetune.dataset import LabeledTexts
from open_autoglm.ml.training.spec import DistributedParams
from open_autoglm.spec.model import ModelName
from open_autoglm.tasks.base import ExecutionMode, TaskContext, TaskType

if TYPE_CHECKING:
    from torch import nn

    from open_autoglm.ml.text.finetune.job import TextClassifierJob
    from open_autoglm.ml.text.finetune.split import Split
    from open_autoglm.ml.training.fit import FitResult


__all__ = [
    "ColumnSplit",
    "Monitor",
    "StratifiedSplit",
    "TextTrainParams",
    "TrainedTextClassifier",
    "base_model_dir",
    "check_table",
    "prepare_text_job",
    "text_train_task_types",
    "train_text_classifier",
]

TASK_TYPE = "text-classifier-train"
# Media types of the files a saved model directory holds.
_MEDIA = {".json": "application/json", ".safetensors": "application/x-safetensors"}


class Monitor(enum.StrEnum):
    """What early stopping and the best epoch are judged on."""

    MACRO_F1 = "val_macro_f1"
    LOSS = "val_loss"


class StratifiedSplit(BaseModel):
    """Fractions of each class held out for validation and test (the rest trains)."""

    model_config = ConfigDict(extra="forbid")

    validation: float = Field(default=0.1, gt=0.0, le=0.5)
    test: float = Field(default=0.1, ge=0.0, le=0.5)


class ColumnSplit(BaseModel):
    """A column naming each row's part: ``train``, ``validation`` or ``test``."""

    model_config = ConfigDict(extra="forbid")

    column: str = Field(min_length=1, max_length=200)


class TextTrainParams(BaseModel):
    """Params of ``text-classifier-train``; the spec's ``model`` names the base encoder."""

    model_config = ConfigDict(extra="forbid")

    text_column: str = Field(default="text", min_length=1, max_length=200)
    label_column: str = Field(default="label", min_length=1, max_length=200)
    labels: list[str] | None = Field(
        default=None,
        min_length=2,
        max_length=1000,
        description="the label names in output order (default: the table's, sorted)",
    )
    split: StratifiedSplit | ColumnSplit = Field(default_factory=StratifiedSplit)
    max_length: int = Field(default=128, ge=8, le=512, description="tokens per text")
    batch_size: int = Field(default=32, ge=1, le=1024)
    lr: float = Field(default=5e-5, gt=0.0, le=1.0)
    weight_decay: float = Field(default=0.01, ge=0.0, le=1.0)
    epochs: int = Field(default=3, ge=1, le=100)
    patience: int = Field(default=0, ge=0, description="0 = no early stopping")
    monitor: Monitor = Monitor.MACRO_F1
    seed: int = Field(default=0, ge=0)
    # Checked at submit, so a name the registry would refuse never costs a training run.
    name: ModelName | None = None
    distributed: DistributedParams = Field(default_factory=DistributedParams)

    @field_validator("labels")
    @classmethod
    def _named(cls, labels: list[str] | None) -> list[str] | None:
        if labels is not None and any(not name.strip() for name in labels):
            raise ValueError("label names must not be empty")
        return labels

    @model_validator(mode="after")
    def _columns_differ(self) -> TextTrainParams:
        columns = [self.text_column, self.label_column]
        if isinstance(self.split, ColumnSplit):
            columns.append(self.split.column)
        if len(set(columns)) != len(columns):
            raise ValueError(f"text, label and split columns must differ, got {columns}")
        return self


@dataclass
class TrainedTextClassifier:
    """What a run produced: the job (data and labels), the split, the fit and the reports."""

    job: TextClassifierJob
    split: Split
    fit: FitResult
    model: nn.Module  # the best epoch's weights, eval mode
    validation: dict[str, Any]
    test: dict[str, Any] | None
    tokens: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------- preparation


def check_table(columns: dict[str, list[Any]], params: TextTrainParams) -> LabeledTexts:
    """The table's labeled texts; raises ValidationError listing every problem of the data."""
    from open_autoglm.ml.text.finetune.dataset import build_dataset

    split = params.split
    return build_dataset(
        columns,
        text_column=params.text_column,
        label_column=params.label_column,
        labels=params.labels,
        split_column=split.column if isinstance(split, ColumnSplit) else None,
        # a stratified split puts at least one row of each class in each part
        min_per_class=1 if isinstance(split, ColumnSplit) else 2 + int(split.test > 0),
    )


def prepare_text_job(
    data: LabeledTexts, params: TextTrainParams, model_dir: str
) -> tuple[TextClassifierJob, Split, dict[str, Any]]:
    """Split checked data, tokenise it with ``model_dir``'s tokenizer, build the job.

    Returns the job, the split and token statistics.
    """
    from transformers import AutoTokenizer

    from open_autoglm.ml.text.finetune.bucketing import bucketed_batches, padded_tokens
    from open_autoglm.ml.text.finetune.job import TextClassifierJob
    from open_autoglm.ml.text.finetune.split import given_split, stratified_split

    parts = params.split
    if isinstance(parts, StratifiedSplit):
        split = stratified_split(
            data.labels, validation=parts.validation, test=parts.test, seed=params.seed
        )
    else:
        split = given_split(data.splits or [])
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    if tokenizer.pad_token_id is None:
        raise ValidationError(
            "the base model's tokenizer has no padding token",
            details=[{"loc": ["model"], "msg": "pick an encoder whose tokenizer pads"}],
        )
    ids = tokenizer(data.texts, truncation=True, max_length=params.max_length)["input_ids"]
    job = TextClassifierJob(
        model_dir=model_dir,
        label_names=data.label_names,
        input_ids=ids,
        labels=data.labels,
        train_rows=split.train,
        val_rows=split.validation,
        pad_id=int(tokenizer.pad_token_id),
        batch_size=params.batch_size,
        lr=params.lr,
        weight_decay=params.weight_decay,
        epochs=params.epochs,
        patience=params.patience,
        seed=params.seed,
        monitor=params.monitor.value,
    )
    bucketed = job.global_batches(0)
    # the same shuffled order cut straight into batches: what bucketing saves
    plain = bucketed_batches(
        split.train,
        job.lengths,
        batch_size=params.batch_size,
        seed=params.seed,
        epoch=0,
        chunk_batches=1,
    )
    tokens = {
        "max_length": params.max_length,
        "rows_at_max_length": sum(n >= params.max_length for n in job.lengths),
        "mean_tokens": round(sum(job.lengths) / max(len(job.lengths), 1), 2),
        "padded_tokens_per_epoch": padded_tokens(bucketed, job.lengths),
        "padded_tokens_per_epoch_unbucketed": padded_tokens(plain, job.lengths),
    }
    return job, split, tokens


def train_text_classifier(
    data: LabeledTexts,
    params: TextTrainParams,
    model_dir: str,
    *,
    run: Callable[[TextClassifierJob], FitResult],
) -> TrainedTextClassifier:
    """Prepare the job, train it with ``run`` (the facility), score the best weights.

    ``run`` is ``lambda job: run_training(ctx, job, params.distributed)`` in the handler, or
    ``lambda job: fit(job, params.distributed)`` outside the platform.
    """
    job, split, tokens = prepare_text_job(data, params, model_dir)
    result = run(job)
    model = job.build_model()
    model.load_state_dict(result.state)
    model.eval()
    validation = job.report(model, split.validation)
    test = job.report(model, split.test) if split.test else None
    return TrainedTextClassifier(job, split, result, model, validation, test, tokens)


# ---------------------------------------------------------------- the handler


def _table_input(raw: Any) -> Any:
    """A bare list of rows is the ``{"rows": [...]}`` form."""
    return {"rows": raw} if isinstance(raw, list) else raw


def _refuse_model(name: str, msg: str) -> ValidationError:
    return ValidationError(f"base model {name!r}: {msg}", details=[{"loc": ["model"], "msg": msg}])


def base_model_dir(ctx: TaskContext) -> str:
    """The local directory of the spec's ``model`` (a registered transformers encoder)."""
    from open_autoglm.ml.text.model_loader import TextModelLoader

    name = str(ctx.model)
    try:
        models = ctx.service("models")
    except KeyError:
        raise _refuse_model(name, "no models service is available here") from None
    try:
        record = models.get(name)
    except AutoGLMError as exc:
        raise _refuse_model(name, exc.message) from None
    source = record.get("source")
    if record.get("backend") != "hf" or (
        isinstance(source, str) and (source.endswith(".gguf") or source == "bundled:smollm2")
    ):
        raise _refuse_model(name, "fine-tuning needs a transformers encoder (safetensors)")
    directory = TextModelLoader().resolve_directory(models.local_entry(name))
    if not (directory / "config.json").is_file():
        raise _refuse_model(name, "its directory has no config.json")
    return str(directory)


def _check(
    ctx: TaskContext, columns: dict[str, list[Any]], params: TextTrainParams
) -> tuple[LabeledTexts, str]:
    """The data and the base model, checked together: one answer lists the problems of both."""
    problems: list[dict[str, Any]] = []
    data = model_dir = None
    try:
        model_dir = base_model_dir(ctx)
    except ValidationError as exc:
        problems += exc.details
    try:
        data = check_table(columns, params)
    except ValidationError as exc:
        problems += exc.details
    if data is None or model_dir is None:
        raise ValidationError(
            f"{TASK_TYPE}: {len(problems)} problem(s); first: {problems[0]['msg']}",
            details=problems,
        )
    return data, model_dir


def _save_model_files(
    ctx: TaskContext, trained: TrainedTextClassifier, max_length: int
) -> dict[str, str]:
    """Write the model directory and store each file; ``{relative name: artifact id}``."""
    from open_autoglm.ml.text.finetune.export import save_classifier

    with tempfile.TemporaryDirectory(prefix="text-classifier-") as tmp:
        out = Path(tmp)
        files = save_classifier(trained.model, trained.job.model_dir, out, max_length=max_length)
        return {
            p.relative_to(out).as_posix(): ctx.save_artifact(
                p.read_bytes(),
                media_type=_MEDIA.get(p.suffix, "application/octet-stream"),
                name=p.relative_to(out).as_posix(),
            )["id"]
            for p in files
        }


def _text_train(ctx: TaskContext) -> dict[str, Any]:
    from open_autoglm.ml.text.finetune.plots import confusion_png
    from open_autoglm.ml.training.task import curves_png, register_model, run_training
    from open_autoglm.spec.table_loaders import resolve_table_input

    params = ctx.params
    if not isinstance(params, TextTrainParams):
        params = TextTrainParams.model_validate(params.model_dump())
    columns = resolve_table_input(_table_input(ctx.input), ctx.load_artifact)
    data, model_dir = _check(ctx, columns, params)
    ctx.progress(0.0, "tokenising")
    trained = train_text_classifier(
        data, params, model_dir, run=lambda job: run_training(ctx, job, params.distributed)
    )
    ctx.progress(1.0, "saving the model")
    ctx.log(
        f"rows {trained.split.sizes()}; best epoch {trained.fit.best_epoch}; "
        f"validation macro F1 {trained.validation['macro_f1']:.4f}"
    )
    scored, where = (trained.test, "test") if trained.test else (trained.validation, "validation")
    names = trained.job.label_names
    confusion = ctx.save_artifact(
        confusion_png(scored["confusion"], names, title=f"confusion ({where} rows)"),
        media_type="image/png",
        name="confusion_matrix.png",
    )
    curves = ctx.save_artifact(
        curves_png(
            trained.fit.history,
            [("loss", ["loss", "val_loss"]), ("score", ["val_accuracy", "val_macro_f1"])],
            title=f"{ctx.model} fine-tuned on {len(names)} labels",
        ),
        media_type="image/png",
        name="training_curves.png",
    )
    files = _save_model_files(ctx, trained, params.max_length)
    registered = register_model(
        ctx,
        name=params.name or f"text-classifier-{ctx.task_id}",
        backend="hf",
        source={"artifacts": files},
        task_types=["text-classification"],
        config={
            "base_model": ctx.model,
            "labels": names,
            "test_metrics": None if trained.test is None else _headline(trained.test),
        },
    )
    return {
        "base_model": ctx.model,
        "labels": names,
        "rows": trained.split.sizes(),
        "metrics": {"validation": trained.validation, "test": trained.test},
        "best_epoch": trained.fit.best_epoch,
        "epochs_run": len(trained.fit.history),
        "history": trained.fit.history,
        "samples_per_second": round(trained.fit.samples_per_s, 3),
        "peak_rss_bytes": trained.fit.peak_rss_bytes,
        "tokens": trained.tokens,
        "artifacts": {"confusion": confusion["id"], "curves": curves["id"], "model_files": files},
        "registered": registered,
    }


def _headline(report: dict[str, Any]) -> dict[str, float]:
    return {k: report[k] for k in ("accuracy", "macro_f1", "loss", "rows")}


def text_train_task_types() -> list[TaskType]:
    return [
        TaskType(
            name=TASK_TYPE,
            handler=_text_train,
            params_model=TextTrainParams,
            description="Fine-tune a registered text encoder with a classification head on a "
            "table of texts and labels; registers a text-classification model.",
            requires_model=True,
            requires_input=True,
            mode=ExecutionMode.PROCESS,
            resources_for=lambda p: {"cpu": p.distributed.cpus},
        )
    ]
