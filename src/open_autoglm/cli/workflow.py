"""``autoglm workflow``: check a workflow file and draw its DAG, offline.

``run FILE --watch`` is added next to these once a server is involved; ``validate`` and
``graph`` need no server, only the spec layer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from open_autoglm import errors

__all__ = ["app"]

app = typer.Typer(help="Validate and draw workflow specs.", no_args_is_help=True)

FileArg = Annotated[
    Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="workflow YAML/JSON")
]
TaskTypesOpt = Annotated[
    list[str] | None,
    typer.Option("--task-type", "-t", help="a known task type (repeat); enables the check"),
]
RegistryOpt = Annotated[
    bool, typer.Option("--registry", help="check task types against the installed plugins")
]


def _known_types(task_types: list[str] | None, registry: bool) -> set[str] | None:
    known: set[str] | None = set(task_types) if task_types else None
    if registry:
        from open_autoglm.plugins.registry import PluginRegistry

        reg = PluginRegistry()
        reg.discover()
        known = (known or set()) | {t.name for t in reg.task_types()}
    return known


def _report(exc: errors.AutoGLMError) -> None:
    typer.echo(f"error: {exc.message}", err=True)
    for d in exc.details:
        loc = ".".join(str(p) for p in d.get("loc", [])) or "(root)"
        typer.echo(f"  - {loc}: {d.get('msg')}", err=True)
    raise typer.Exit(1)


@app.command()
def validate(
    file: FileArg,
    task_type: TaskTypesOpt = None,
    registry: RegistryOpt = False,
    inputs: Annotated[
        str | None, typer.Option("--inputs", help="run inputs as JSON, checked against the spec")
    ] = None,
) -> None:
    """Check FILE and list every problem; exit 1 if there is any."""
    from open_autoglm.spec.workflow import bind_inputs, load_workflow, validate_workflow

    known = _known_types(task_type, registry)
    try:
        spec = validate_workflow(load_workflow(file), known)
        if inputs is not None:
            bind_inputs(spec, json.loads(inputs))
    except errors.ValidationError as exc:
        _report(exc)
        return
    except json.JSONDecodeError as exc:
        typer.echo(f"error: --inputs is not JSON: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"ok: workflow {spec.name!r} is valid ({len(spec.steps)} steps)")
    if known is None:
        typer.echo("note: task types were not checked (pass --task-type or --registry)")


@app.command()
def graph(
    file: FileArg,
    output: Annotated[Path, typer.Option("--output", "-o", help="PNG file to write")] = Path(
        "dag.png"
    ),
) -> None:
    """Draw FILE's DAG to a PNG."""
    from open_autoglm.spec.workflow import load_workflow, validate_workflow
    from open_autoglm.workflows.graph import render_workflow_png

    try:
        spec = validate_workflow(load_workflow(file))
    except errors.ValidationError as exc:
        _report(exc)
        return
    path = render_workflow_png(spec, output)
    typer.echo(f"wrote {path}")
