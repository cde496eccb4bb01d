"""``autoglm temporal``: validate event-stream files, train on them, query trained models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from open_autoglm.cli.common import JsonOpt, KeyOpt, UrlOpt, call, fail, print_json
from open_autoglm.errors import AutoGLMError, ValidationError
from open_autoglm.spec.event_loaders import load_events
from open_autoglm.spec.events import EventLimits, EventPolicy, OrderPolicy

__all__ = ["app"]

app = typer.Typer(
    help="Event streams: validate, train link predictors, predict.", no_args_is_help=True
)
console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True)


def _loc(loc: list[object]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".") or "(root)"


def _print_problems(file: Path, exc: AutoGLMError) -> None:
    console.print(f"[red]{escape(str(file))}: {escape(exc.message)}[/red]")
    table = Table("location", "problem")
    for d in exc.details:
        table.add_row(escape(_loc(d.get("loc", []))), escape(str(d.get("msg"))))
    console.print(table)


@app.command()
def validate(
    file: Annotated[Path, typer.Argument(help="stream: .json, .csv/.txt, .parquet or .npz")],
    unsorted: Annotated[OrderPolicy, typer.Option(help="unsorted streams")] = OrderPolicy.SORT,
    max_problems: Annotated[int, typer.Option(min=1, help="stop listing after this many")] = 100,
    json_out: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
) -> None:
    """Validate FILE and print every problem with its location; exit 1 when invalid."""
    if not file.is_file():
        console.print(f"[red]no such file:[/red] {escape(str(file))}")
        raise typer.Exit(2)
    try:
        stream = load_events(
            file,
            policy=EventPolicy(unsorted=unsorted),
            limits=EventLimits(max_problems=max_problems),
        )
    except ValidationError as exc:
        if json_out:
            typer.echo(json.dumps(exc.to_dict(), ensure_ascii=False, indent=2))
        else:
            _print_problems(file, exc)
        raise typer.Exit(1) from None
    notes = [n["msg"] for n in stream.notes]
    summary = {
        "valid": True,
        "events": stream.num_events,
        "nodes": stream.num_nodes,
        "edge_features": stream.edge_dim,
        "labels": stream.labels is not None,
        "t_min": float(stream.t[0]),
        "t_max": float(stream.t[-1]),
        "notes": notes,
    }
    if json_out:
        typer.echo(json.dumps(summary, indent=2))
        return
    console.print(
        f"[green]{escape(str(file))}: valid[/green] - {stream.num_events} events, "
        f"{stream.num_nodes} nodes, {stream.edge_dim} edge features, "
        f"t from {stream.t[0]:g} to {stream.t[-1]:g}"
    )
    for note in notes:
        console.print(f"  note: {escape(str(note))}")


@app.command()
def train(
    file: Annotated[Path, typer.Argument(help="stream file (validated locally first)")],
    kind: Annotated[str, typer.Option(help="tgn, tgat or edgebank")] = "tgn",
    epochs: Annotated[int, typer.Option(min=1)] = 10,
    name: Annotated[str | None, typer.Option(help="register the model under this name")] = None,
    param: Annotated[
        list[str] | None, typer.Option("--param", "-p", help="KEY=JSON, repeatable")
    ] = None,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Upload FILE, train a link predictor on it as a job, and follow it with a progress bar."""
    try:
        load_events(file)
    except ValidationError as exc:
        if json_out:
            fail(exc, as_json=True)
        _print_problems(file, exc)
        raise typer.Exit(1) from None
    params: dict[str, Any] = {"kind": kind, "epochs": epochs}
    for item in param or []:
        key, _, raw = item.partition("=")
        try:
            params[key] = json.loads(raw)
        except json.JSONDecodeError:
            params[key] = raw

    def go(c: Any) -> dict[str, Any]:
        art = c.upload_artifact(file.read_bytes(), name=file.name)
        task = c.temporal_train({"artifact": art["id"]}, name=name, **params)
        return _follow(c, task["id"], epochs)

    final = call(url, api_key, go)  # refused at submit: every problem, exit 1
    if json_out:
        print_json(final)
        if final["status"] != "succeeded":
            raise typer.Exit(1)
        return
    if final["status"] != "succeeded":
        err = final.get("error") or {}
        console.print(
            f"[red]task {final['id']} {final['status']}: {escape(str(err.get('message')))}[/red]"
        )
        raise typer.Exit(1)
    result = final["result"]
    m = result["metrics"]
    console.print(
        f"[green]trained[/green] {kind}: test AP {m['test_transductive_random_ap']:.4f} "
        f"(inductive {m['test_inductive_random_ap']:.4f}, historical negatives "
        f"{m['test_transductive_historical_ap']:.4f}); registered as {result['registered']}"
    )


def _follow(c: Any, task_id: str, epochs: int) -> dict[str, Any]:
    """Show one bar step per epoch with its loss, validation AP and events/s."""
    with Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(), console=err_console, transient=True,
    ) as bar:  # fmt: skip
        job = bar.add_task("queued", total=1.0)
        for kind, data in c.stream_events(task_id, timeout=24 * 3600):
            if kind == "progress":
                d = data.get("data") or data
                desc = data.get("message") or "training"
                if "val_ap" in d:
                    desc += f"  loss {d['loss']:.4f}  val AP {d['val_ap']:.4f}  {d['events_per_s']:.0f} events/s"
                bar.update(job, completed=data.get("fraction", 0.0), description=desc)
            elif kind == "status" and data.get("status") in ("succeeded", "failed", "cancelled"):
                break
    task: dict[str, Any] = c.wait(task_id, raise_on_failure=False)
    return task


def _node(text: str) -> int | str:
    stripped = text.strip()
    return int(stripped) if stripped.lstrip("-").isdigit() else stripped


@app.command()
def predict(
    model: Annotated[str, typer.Argument(help="registered temporal model")],
    src: Annotated[str, typer.Option(help="source node id")],
    t: Annotated[float, typer.Option("--t", help="query time")],
    dst: Annotated[list[str] | None, typer.Option(help="destination(s) to score")] = None,
    top_k: Annotated[int, typer.Option(min=0, help="also list the k likeliest destinations")] = 0,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Probability that SRC links to each DST at time T, and/or its top-k destinations."""
    links = [{"src": _node(src), "dst": _node(d), "t": t} for d in dst or []]
    top = [{"src": _node(src), "t": t, "k": top_k}] if top_k else []
    out = call(url, api_key, lambda c: c.temporal_predict(model, links=links, top_k=top))
    if json_out:
        print_json(out)
        return
    table = Table("src", "dst", "t", "probability")
    for row in out.get("links", []):
        table.add_row(
            str(row["src"]), str(row["dst"]), f"{row['t']:g}", f"{row['probability']:.4f}"
        )
    for q in out.get("top_k", []):
        for row in q["destinations"]:
            table.add_row(
                str(q["src"]), str(row["dst"]), f"{q['t']:g}", f"{row['probability']:.4f}"
            )
    console.print(table)
