"""``autoglm graph``: check graph files locally, before submitting them."""

from __future__ import annotations

import enum
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from open_autoglm.errors import ValidationError
from open_autoglm.spec.graph import GraphLimits, GraphPolicy
from open_autoglm.spec.graph_loaders import load_graph

__all__ = ["app"]

app = typer.Typer(help="Graph inputs: validate files before training.", no_args_is_help=True)


@app.callback()
def _group() -> None:
    """Graph inputs: validate files before training."""  # keeps `validate` a sub-command


class SelfLoops(enum.StrEnum):
    ERROR = "error"
    DROP = "drop"
    KEEP = "keep"


class DuplicateEdges(enum.StrEnum):
    ERROR = "error"
    MERGE = "merge"


def _loc(loc: list[object]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".") or "(root)"


@app.command()
def validate(
    file: Annotated[Path, typer.Argument(help="graph file: .json, .npz or .csv edge list")],
    self_loops: Annotated[SelfLoops, typer.Option(help="self-loop policy")] = SelfLoops.ERROR,
    duplicate_edges: Annotated[
        DuplicateEdges | None,
        typer.Option(help="duplicate-edge policy [default: error; merge for .npz]"),
    ] = None,
    max_problems: Annotated[int, typer.Option(min=1, help="stop listing after this many")] = 100,
    json_out: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
) -> None:
    """Validate FILE and print every problem with its location; exit 1 when invalid."""
    console = Console(highlight=False, soft_wrap=True)
    # The same policy and loaders graph-train uses: an unset duplicate policy is the format's.
    policy = GraphPolicy.model_validate(
        {
            "self_loops": str(self_loops),
            "duplicate_edges": None if duplicate_edges is None else str(duplicate_edges),
        }
    )
    if not file.is_file():
        console.print(f"[red]no such file:[/red] {escape(str(file))}")
        raise typer.Exit(2)
    try:
        graph = load_graph(file, policy=policy, limits=GraphLimits(max_problems=max_problems))
    except ValidationError as exc:
        if json_out:
            typer.echo(json.dumps(exc.to_dict(), ensure_ascii=False, indent=2))
            raise typer.Exit(1) from None
        console.print(f"[red]{escape(str(file))}: {escape(exc.message)}[/red]")
        table = Table("location", "problem")
        for d in exc.details:
            table.add_row(escape(_loc(d.get("loc", []))), escape(str(d.get("msg"))))
        console.print(table)
        raise typer.Exit(1) from None
    notes = [n["msg"] for n in graph.notes]
    summary = {
        "valid": True,
        "nodes": graph.num_nodes,
        "edges": graph.num_edges,
        "directed": graph.directed,
        "features": graph.num_features,
        "classes": graph.num_classes,
        "notes": notes,
    }
    if json_out:
        typer.echo(json.dumps(summary, indent=2))
        return
    console.print(
        f"[green]{escape(str(file))}: valid[/green] - {graph.num_nodes} nodes, "
        f"{graph.num_edges} edges, {graph.num_features} features, {graph.num_classes} classes"
    )
    for note in notes:
        console.print(f"  note: {escape(str(note))}")
