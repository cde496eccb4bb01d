"""``autoglm fusion``: check a table against its schema, train fusion models, predict rows.

``validate`` runs locally (no server); ``train`` uploads the table (Parquet, CSV or JSON
lines), submits ``fusion-train`` and follows it with a progress bar; ``predict`` scores the
rows of a file with a registered fusion model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from open_autoglm.cli.common import JsonOpt, KeyOpt, UrlOpt, call, fail, print_json
from open_autoglm.errors import ValidationError

__all__ = ["app"]

app = typer.Typer(
    help="Text + tabular fusion: validate tables, train, predict.", no_args_is_help=True
)
console = Console(highlight=False, soft_wrap=True)

SchemaOpt = Annotated[
    Path, typer.Option("--schema", help="schema JSON: text, categorical, numeric, label")
]
_MEDIA = {".parquet": "application/vnd.apache.parquet", ".csv": "text/csv"}
_FORMATS = {".parquet": "parquet", ".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}


def _read_schema(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        console.print(f"[red]cannot read schema {escape(str(path))}: {escape(str(exc))}[/red]")
        raise typer.Exit(2) from None
    if not isinstance(data, dict):
        console.print(f"[red]{escape(str(path))}: a schema is a JSON object[/red]")
        raise typer.Exit(2)
    return data


def _format_of(path: Path) -> str:
    fmt = _FORMATS.get(path.suffix.lower())
    if fmt is None:
        console.print(f"[red]{escape(str(path))}: expected .parquet, .csv or .jsonl[/red]")
        raise typer.Exit(2)
    return fmt


def _print_problems(where: str, exc: ValidationError) -> None:
    console.print(f"[red]{escape(where)}: {escape(exc.message)}[/red]")
    table = Table("location", "problem")
    for d in exc.details:
        loc = ".".join(str(p) for p in d.get("loc", [])) or "(table)"
        table.add_row(escape(loc), escape(str(d.get("msg"))))
    console.print(table)


@app.command()
def validate(
    file: Annotated[Path, typer.Argument(help="table: .parquet, .csv or .jsonl")],
    schema: SchemaOpt,
    unlabeled: Annotated[bool, typer.Option(help="rows to predict: no label column")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Check FILE against the schema and print every problem; exit 1 when invalid."""
    from open_autoglm.spec.table import TableSchema, validate_table
    from open_autoglm.spec.table_loaders import read_table_bytes

    fmt = _format_of(file)
    try:
        parsed = TableSchema.model_validate(_read_schema(schema))
        table = validate_table(
            read_table_bytes(file.read_bytes(), fmt), parsed, require_label=not unlabeled
        )
    except ValidationError as exc:
        if json_out:
            fail(exc, as_json=True)
        _print_problems(str(file), exc)
        raise typer.Exit(1) from None
    except ValueError as exc:  # the schema itself (pydantic)
        if json_out:
            fail(ValidationError(f"{schema}: {exc}"), as_json=True)
        console.print(f"[red]{escape(str(schema))}: {escape(str(exc))}[/red]")
        raise typer.Exit(1) from None
    without_text = sum(1 for t in table.texts if not t)
    if json_out:
        print_json(
            {
                "valid": True,
                "rows": table.num_rows,
                "rows_without_text": without_text,
                "classes": table.classes() if table.labels is not None else None,
            }
        )
        return
    console.print(
        f"{escape(str(file))}: {table.num_rows} rows, valid; "
        f"{without_text} rows without text (masked)"
        + (f"; classes {table.classes()}" if table.labels is not None else "")
    )


@app.command()
def train(
    file: Annotated[Path, typer.Argument(help="table: .parquet, .csv or .jsonl")],
    schema: SchemaOpt,
    strategy: Annotated[str, typer.Option(help="early, late, hybrid, text, tabular or compare")] = (
        "hybrid"
    ),
    text_model: Annotated[
        str | None, typer.Option(help="registered embedding model for the text columns")
    ] = None,
    epochs: Annotated[int, typer.Option(min=1)] = 30,
    name: Annotated[str | None, typer.Option(help="register the model under this name")] = None,
    wait: Annotated[bool, typer.Option(help="follow the job with a progress bar")] = True,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Upload FILE, train on it, and print each strategy's test metrics."""
    from open_autoglm.cli.main import _wait_live

    fmt = _format_of(file)
    params: dict[str, Any] = {"epochs": epochs}
    if name:
        params["name"] = name

    def go(c: Any) -> dict[str, Any]:
        media = _MEDIA.get(file.suffix.lower(), "application/x-ndjson")
        artifact = c.upload_artifact(file.read_bytes(), name=file.name, media_type=media)
        task: dict[str, Any] = c.fusion_train(
            {"artifact": artifact["id"], "format": fmt},
            _read_schema(schema),
            strategy=strategy,
            text_model=text_model,
            **params,
        )
        return _wait_live(c, task["id"]) if wait else task

    task = call(url, api_key, go)
    if json_out:
        print_json(task)
        if wait and task["status"] != "succeeded":
            raise typer.Exit(1)
        return
    console.print(f"task [bold]{task['id']}[/bold] {task['status']}")
    if task.get("error"):
        err = task["error"]
        console.print(
            f"[red]{escape(str(err.get('code')))}[/red]: {escape(str(err.get('message')))}"
        )
        for d in err.get("details", []):
            loc = ".".join(str(p) for p in d.get("loc", []))
            console.print(f"  - {escape(loc)}: {escape(str(d.get('msg')))}")
        raise typer.Exit(1)
    result = task.get("result")
    if not result:
        return
    table = Table("strategy", "accuracy", "macro F1", "weighted F1", "ms/row")
    for key, r in result["results"].items():
        m = r["metrics"]
        table.add_row(
            key + (" *" if key == result["chosen"] else ""),
            f"{m['accuracy']:.3f}",
            f"{m['macro_f1']:.3f}",
            f"{m['weighted_f1']:.3f}",
            f"{m['latency_ms_per_row']:.3f}",
        )
    console.print(table)
    console.print(f"registered: {result['registered']}  (* = chosen on validation accuracy)")
    print_json({"artifacts": result["artifacts"]})


@app.command()
def predict(
    model: Annotated[str, typer.Argument(help="registered fusion model")],
    file: Annotated[Path, typer.Argument(help="rows: .parquet, .csv or .jsonl (no label needed)")],
    json_out: JsonOpt = False,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Classify the rows of FILE with MODEL; prints each row's label and probabilities."""
    from open_autoglm.spec.table_loaders import read_table_bytes

    columns = read_table_bytes(file.read_bytes(), _format_of(file))
    names = list(columns)
    rows = [dict(zip(names, cells, strict=True)) for cells in zip(*columns.values(), strict=True)]
    result = call(url, api_key, lambda c: c.fusion_predict(model, orjson.loads(orjson.dumps(rows))))
    if json_out:
        print_json(result)
        return
    table = Table("row", "label", *(str(c) for c in result["classes"]))
    for p in result["predictions"]:
        table.add_row(str(p["row"]), str(p["label"]), *(f"{x:.3f}" for x in p["probabilities"]))
    console.print(table)
