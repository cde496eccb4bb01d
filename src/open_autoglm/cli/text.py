"""``autoglm text train``: fine-tune a text classifier on a table file, then serve it.

``train`` uploads the file (Parquet, CSV or JSON lines), submits ``text-classifier-train``
and follows it with a live progress bar (loss, samples/s, ETA from the task's progress
events); the trained model is registered and answers ``text-classification`` at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from open_autoglm.cli.common import JsonOpt, KeyOpt, UrlOpt, call, print_json

__all__ = ["app"]

app = typer.Typer(help="Text models: fine-tune a classifier on a table.", no_args_is_help=True)
console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True)

_FORMATS = {".parquet": "parquet", ".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
_MEDIA = {"parquet": "application/vnd.apache.parquet", "csv": "text/csv"}
_TERMINAL = ("succeeded", "failed", "cancelled")


@app.callback()
def _group() -> None:
    """Text models: fine-tune a classifier on a table."""  # keeps `train` a sub-command


def _loc(loc: list[object]) -> str:
    return ".".join(str(p) for p in loc) or "(table)"


def _print_error(err: dict[str, Any]) -> None:
    console.print(f"[red]{escape(str(err.get('code')))}[/red]: {escape(str(err.get('message')))}")
    if err.get("details"):
        table = Table("location", "problem")
        for d in err["details"]:
            table.add_row(escape(_loc(d.get("loc", []))), escape(str(d.get("msg"))))
        console.print(table)


def _stats(d: dict[str, Any]) -> str:
    """The numbers of a progress event worth a glance: loss, throughput, time left."""
    parts = []
    if isinstance(d.get("loss"), int | float):
        parts.append(f"loss {d['loss']:.4f}")
    if isinstance(d.get("val_macro_f1"), int | float):
        parts.append(f"val F1 {d['val_macro_f1']:.3f}")
    rate = d.get("samples_per_s")
    if isinstance(rate, int | float):
        parts.append(f"{rate:.1f} samples/s")
    eta = d.get("eta_s")
    if isinstance(eta, int | float):
        parts.append(f"ETA {int(eta) // 60}:{int(eta) % 60:02d}")
    return "  ".join(parts)


def follow(c: Any, task_id: str) -> dict[str, Any]:
    """Show the task's progress events on a live bar until it ends; return the final task."""
    with Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
        TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), console=err_console,
        transient=True,
    ) as bar:  # fmt: skip
        job = bar.add_task("queued", total=1.0, stats="")
        for kind, data in c.stream_events(task_id, timeout=24 * 3600):
            if kind == "progress":
                d = data.get("data") or data
                bar.update(
                    job,
                    completed=data.get("fraction", 0.0),
                    description=data.get("message") or "training",
                    stats=_stats(d),
                )
            elif kind == "status" and data.get("status") in _TERMINAL:
                break
    task: dict[str, Any] = c.wait(task_id, raise_on_failure=False)
    return task


@app.command()
def train(
    file: Annotated[Path, typer.Argument(help="table: .parquet, .csv or .jsonl")],
    model: Annotated[str, typer.Option(help="registered encoder to fine-tune")] = "minilm",
    text_column: Annotated[str, typer.Option(help="column holding the texts")] = "text",
    label_column: Annotated[str, typer.Option(help="column holding the labels")] = "label",
    labels: Annotated[
        str | None, typer.Option(help="label names in output order, comma-separated")
    ] = None,
    split_column: Annotated[
        str | None, typer.Option(help="column naming each row's train/validation/test part")
    ] = None,
    validation: Annotated[float, typer.Option(help="stratified validation fraction")] = 0.1,
    test: Annotated[float, typer.Option(help="stratified test fraction")] = 0.1,
    epochs: Annotated[int, typer.Option(min=1)] = 3,
    max_length: Annotated[int, typer.Option(help="tokens per text")] = 128,
    batch_size: Annotated[int, typer.Option(min=1)] = 32,
    lr: Annotated[float, typer.Option(help="learning rate")] = 5e-5,
    patience: Annotated[int, typer.Option(help="early stopping (0: off)")] = 0,
    seed: int = 0,
    name: Annotated[str | None, typer.Option(help="register the model under this name")] = None,
    strategy: Annotated[str, typer.Option(help="none, ddp or fsdp")] = "none",
    world_size: Annotated[int, typer.Option(min=1, help="ranks for ddp/fsdp")] = 1,
    precision: Annotated[str, typer.Option(help="fp32 or bf16")] = "fp32",
    wait: Annotated[bool, typer.Option(help="follow the job with a progress bar")] = True,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Upload FILE, fine-tune MODEL on it, print the test metrics and the registered name."""
    fmt = _FORMATS.get(file.suffix.lower())
    if fmt is None or not file.is_file():
        console.print(f"[red]{escape(str(file))}: expected a .parquet, .csv or .jsonl file[/red]")
        raise typer.Exit(2)
    params: dict[str, Any] = {
        "text_column": text_column,
        "label_column": label_column,
        "split": {"column": split_column}
        if split_column
        else {"validation": validation, "test": test},
        "epochs": epochs,
        "max_length": max_length,
        "batch_size": batch_size,
        "lr": lr,
        "patience": patience,
        "seed": seed,
        "distributed": {"strategy": strategy, "world_size": world_size, "precision": precision},
    }
    if labels:
        params["labels"] = [s.strip() for s in labels.split(",")]
    if name:
        params["name"] = name

    def go(c: Any) -> dict[str, Any]:
        media = _MEDIA.get(fmt, "application/x-ndjson")
        art = c.upload_artifact(file.read_bytes(), name=file.name, media_type=media)
        task: dict[str, Any] = c.text_classifier_train(
            {"artifact": art["id"], "format": fmt}, model=model, **params
        )
        return follow(c, task["id"]) if wait else task

    task = call(url, api_key, go)  # refused at submit (bad params): every problem, exit 1
    if json_out:
        print_json(task)
        if wait and task["status"] != "succeeded":
            raise typer.Exit(1)
        return
    if not wait:
        console.print(f"task [bold]{task['id']}[/bold] {task['status']}")
        return
    if task["status"] != "succeeded":
        console.print(f"task [bold]{task['id']}[/bold] {task['status']}")
        _print_error(task.get("error") or {})
        raise typer.Exit(1)
    result = task["result"]
    scored = result["metrics"]["test"] or result["metrics"]["validation"]
    where = "test" if result["metrics"]["test"] else "validation"
    table = Table("label", "precision", "recall", "F1", "rows")
    for label, m in scored["per_class"].items():
        table.add_row(
            escape(label), f"{m['precision']:.3f}", f"{m['recall']:.3f}", f"{m['f1']:.3f}",
            str(m["support"]),
        )  # fmt: skip
    console.print(table)
    console.print(
        f"{where}: accuracy {scored['accuracy']:.4f}, macro F1 {scored['macro_f1']:.4f} "
        f"({scored['rows']} rows; best epoch {result['best_epoch'] + 1} of "
        f"{result['epochs_run']})"
    )
    console.print(
        f"registered: [bold]{escape(str(result['registered']))}[/bold]  "
        f"confusion matrix: artifact {result['artifacts']['confusion']}  "
        f"curves: artifact {result['artifacts']['curves']}"
    )
