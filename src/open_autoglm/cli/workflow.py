"""``autoglm workflow``: check and draw a workflow offline; run and follow it on a server.

``validate`` and ``graph`` need no server, only the spec layer. ``run`` and ``status`` talk to
a server through the SDK (``--url`` / ``AUTOGLM_URL``).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from open_autoglm import errors
from open_autoglm.cli.common import (
    JsonOpt,
    KeyOpt,
    UrlOpt,
    call,
    console,
    human_time,
    print_json,
)
from open_autoglm.client.base import RUN_TERMINAL

__all__ = ["app"]

app = typer.Typer(help="Validate, draw, run and follow workflows.", no_args_is_help=True)

FileArg = Annotated[
    Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="workflow YAML/JSON")
]

_TERMINAL = RUN_TERMINAL
_STYLE = {
    "succeeded": "green",
    "failed": "red",
    "timed_out": "red",
    "cancelled": "yellow",
    "skipped": "dim",
    "running": "cyan",
    "submitted": "blue",
    "retry_wait": "magenta",
    "pending": "white",
}


def _report(exc: errors.AutoGLMError, as_json: bool = False) -> None:
    if as_json:
        print_json(exc.to_dict())
        raise typer.Exit(1)
    typer.echo(f"error: {exc.message}", err=True)
    for d in exc.details:
        loc = ".".join(str(p) for p in d.get("loc", [])) or "(root)"
        typer.echo(f"  - {loc}: {d.get('msg')}", err=True)
    raise typer.Exit(1)


@app.command()
def validate(
    file: FileArg,
    inputs: Annotated[
        str | None, typer.Option("--inputs", help="run inputs as JSON, checked against the spec")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Check FILE as the server would (its plugins, its task checks); list every problem."""
    from open_autoglm.cli.offline import validate_workflow
    from open_autoglm.spec.workflow import bind_inputs, load_workflow

    try:
        spec = validate_workflow(load_workflow(file))
        if inputs is not None:
            bind_inputs(spec, json.loads(inputs))
    except errors.ValidationError as exc:
        _report(exc, json_out)
        return
    except json.JSONDecodeError as exc:
        _report(errors.ValidationError(f"--inputs is not JSON: {exc}"), json_out)
        return
    if json_out:
        print_json({"valid": True, "name": spec.name, "steps": [s.name for s in spec.steps]})
        return
    typer.echo(f"ok: workflow {spec.name!r} is valid ({len(spec.steps)} steps)")


@app.command()
def graph(
    file: FileArg,
    output: Annotated[Path, typer.Option("--output", "-o", help="PNG file to write")] = Path(
        "dag.png"
    ),
    json_out: JsonOpt = False,
) -> None:
    """Draw FILE's DAG to a PNG."""
    from open_autoglm.spec.workflow import load_workflow, validate_workflow
    from open_autoglm.workflows.graph import render_workflow_png

    try:
        spec = validate_workflow(load_workflow(file))
    except errors.ValidationError as exc:
        _report(exc, json_out)
        return
    path = render_workflow_png(spec, output)
    if json_out:
        print_json({"path": str(path), "steps": len(spec.steps)})
        return
    typer.echo(f"wrote {path}")


# --------------------------------------------------------------------------- server commands


def _parse_inputs(inputs: str | None) -> dict[str, Any]:
    if inputs is None:
        return {}
    try:
        value = json.loads(inputs)
    except json.JSONDecodeError as exc:
        typer.echo(f"error: --inputs is not JSON: {exc}", err=True)
        raise typer.Exit(1) from None
    if not isinstance(value, dict):
        typer.echo("error: --inputs must be a JSON object", err=True)
        raise typer.Exit(1)
    return value


def _label(status: str) -> str:
    return f"[{_STYLE.get(status, 'white')}]{status}[/]"


def run_tree(run: dict[str, Any]) -> Any:
    """A rich Tree of a run: every step, its instances and nested runs, with their states."""
    from rich.markup import escape
    from rich.tree import Tree

    title = f"[bold]{escape(run['name'])}[/] {run['id']} {_label(run['status'])}"
    if run.get("error"):
        title += f" [red]{escape(str(run['error']))}[/]"
    root = Tree(title)
    _add_steps(root, run["steps"])
    return root


def _add_steps(node: Any, steps: list[dict[str, Any]]) -> None:
    from rich.markup import escape

    for step in steps:
        text = f"{escape(step['name'])} {_label(step['status'])}"
        if step["attempts"] > len(step["instances"]):
            text += f" [dim]attempts={step['attempts']}[/]"
        why = step.get("skip_reason") or step.get("error")
        if why:
            text += f" [dim]— {escape(str(why))}[/]"
        mapped = any(i["index"] is not None for i in step["instances"])
        if not mapped and len(step["instances"]) == 1 and "run" not in step["instances"][0]:
            task = step["instances"][0]["task_id"]
            node.add(text + (f" [dim]task {task}[/]" if task else ""))
            continue
        child = node.add(text)
        for inst in step["instances"]:
            line = f"{escape(inst['id'])} {_label(inst['status'])}"
            if inst["attempts"] > 1:
                line += f" [dim]attempt {inst['attempts']}[/]"
            if inst.get("error") and inst["status"] != "succeeded":
                line += f" [dim]— {escape(str(inst['error']))}[/]"
            sub = child.add(line)
            if "run" in inst:
                _add_steps(sub, inst["run"]["steps"])


@app.command()
def run(
    file: FileArg,
    inputs: Annotated[str | None, typer.Option("--inputs", help="run inputs as JSON")] = None,
    watch: Annotated[
        bool, typer.Option("--watch", "-w", help="follow the run live until it ends")
    ] = False,
    poll_s: Annotated[float, typer.Option("--poll", help="refresh interval (s)")] = 0.3,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Start FILE on the server; with --watch, show a live tree of step states.

    With --watch the exit code is 0 only when the run succeeded.
    """
    from open_autoglm.client import Client

    values = _parse_inputs(inputs)
    with Client(url, api_key=api_key) as client:
        try:
            started = client.run_workflow(file.read_text(encoding="utf-8"), values)
        except errors.AutoGLMError as exc:
            _report(exc)
            return
        if not watch:
            if json_out:
                print_json(started)
            else:
                typer.echo(f"{started['id']} {started['status']}")
            return
        final = _watch(client, started["id"], poll_s) if not json_out else _quiet(client, started)
        if json_out:
            print_json(final)
    raise typer.Exit(0 if final["status"] == "succeeded" else 1)


def _quiet(client: Any, started: dict[str, Any]) -> dict[str, Any]:
    """Wait for the run without drawing it (for --json)."""
    return client.wait_run(started["id"])  # type: ignore[no-any-return]


def _watch(client: Any, run_id: str, poll_s: float) -> dict[str, Any]:
    from rich.console import Console
    from rich.live import Live

    console = Console()
    current: dict[str, Any] = client.get_run(run_id)
    with Live(run_tree(current), console=console, refresh_per_second=8) as live:
        while current["status"] not in _TERMINAL:
            time.sleep(poll_s)
            current = client.get_run(run_id)
            live.update(run_tree(current))
    return current


@app.command()
def status(
    run_id: Annotated[str, typer.Argument(help="a workflow run id")],
    as_json: Annotated[bool, typer.Option("--json", help="print the run as JSON")] = False,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Show a run: every step's state, attempts, task id, and why it was skipped or failed."""
    from open_autoglm.client import Client

    with Client(url, api_key=api_key) as client:
        try:
            current = client.get_run(run_id)
        except errors.AutoGLMError as exc:
            _report(exc)
            return
    if as_json:
        sys.stdout.write(json.dumps(current, indent=2) + "\n")
        return
    from rich.console import Console

    Console().print(run_tree(current))


@app.command("list")
def list_runs(
    status_: Annotated[str | None, typer.Option("--status", help="filter by status")] = None,
    name: Annotated[str | None, typer.Option("--name", help="filter by workflow name")] = None,
    limit: Annotated[int, typer.Option(help="at most this many")] = 50,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """List workflow runs, newest first."""
    runs = call(url, api_key, lambda c: list(c.list_runs(status=status_, name=name, limit=limit)))
    if json_out:
        print_json(runs)
        return
    table = Table("id", "workflow", "status", "created", "error")
    now = time.time()
    for r in runs:
        table.add_row(
            r["id"],
            r["name"],
            r["status"],
            human_time(r.get("created_at"), now=now),
            (r.get("error") or "")[:80],
        )
    console.print(table)


@app.command()
def cancel(
    run_id: Annotated[str, typer.Argument(help="a workflow run id")],
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Cancel a run and its running step tasks; prints the state it ends in."""
    run_view = call(url, api_key, lambda c: c.cancel_run(run_id))
    if json_out:
        print_json(run_view)
        return
    console.print(f"run [bold]{run_view['id']}[/bold] {run_view['status']}")
