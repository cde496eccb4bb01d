"""``autoglm models``: the model registry of a running server (list, show, register, delete,
upload a local model directory)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from open_autoglm.cli.common import JsonOpt, KeyOpt, UrlOpt, fail
from open_autoglm.errors import AutoGLMError

__all__ = ["app"]

app = typer.Typer(help="Manage the model registry of a server.", no_args_is_help=True)

console = Console()
err_console = Console(stderr=True)


def _client(url: str | None, key: str | None) -> Any:
    from open_autoglm.client import Client

    return Client(url, api_key=key, timeout=300.0)


def _fail(exc: AutoGLMError) -> None:
    fail(exc)


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


@app.command("list")
def list_models(
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Registered models with backend, task types and load state."""
    with _client(url, api_key) as c:
        try:
            models = c.list_models()
        except AutoGLMError as exc:
            _fail(exc)
    if json_out:
        _print_json(models)
        return
    table = Table("name", "backend", "task types", "state")
    for m in models:
        table.add_row(m["name"], m["backend"], ", ".join(m["task_types"]), m["state"])
    console.print(table)


@app.command()
def show(name: str, url: UrlOpt = None, api_key: KeyOpt = None, json_out: JsonOpt = True) -> None:
    """One registry entry as JSON (always; --json is accepted for symmetry)."""
    with _client(url, api_key) as c:
        try:
            _print_json(c.get_model(name))
        except AutoGLMError as exc:
            _fail(exc)


@app.command()
def register(
    file: Annotated[Path, typer.Argument(help="registry entry as a JSON file")],
    replace: Annotated[bool, typer.Option(help="replace an entry of the same name")] = False,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Register a model from a JSON entry (name, backend, source, task_types, ...)."""
    from open_autoglm.spec.limits import read_document

    try:
        entry = read_document(file)
    except AutoGLMError as exc:
        err_console.print(f"[red]error[/red]: {exc.message}")
        raise typer.Exit(1) from None
    with _client(url, api_key) as c:
        try:
            out = c.register_model(entry, replace=replace)
        except AutoGLMError as exc:
            _fail(exc)
    if json_out:
        _print_json(out)
        return
    console.print(f"registered [bold]{out['name']}[/bold] ({out['backend']})")


@app.command()
def delete(
    name: str, url: UrlOpt = None, api_key: KeyOpt = None, json_out: JsonOpt = False
) -> None:
    """Unregister a model (it is unloaded when no request holds it)."""
    with _client(url, api_key) as c:
        try:
            c.delete_model(name)
        except AutoGLMError as exc:
            _fail(exc)
    if json_out:
        _print_json({"deleted": name})
        return
    console.print(f"deleted [bold]{name}[/bold]")


@app.command()
def upload(
    directory: Annotated[Path, typer.Argument(help="model directory (config.json + weights)")],
    name: Annotated[str, typer.Option("--name", help="registry name")],
    task_type: Annotated[
        list[str], typer.Option("--task-type", help="task type(s) it serves; repeatable")
    ],
    dtype: Annotated[str | None, typer.Option(help="float32, float16 or bfloat16")] = None,
    replace: Annotated[bool, typer.Option(help="replace an entry of the same name")] = False,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Upload a local model directory file by file as artifacts and register it."""
    fields: dict[str, Any] = {"dtype": dtype} if dtype else {}
    with _client(url, api_key) as c:
        try:
            out = c.upload_model(
                str(directory), name=name, task_types=task_type, replace=replace, **fields
            )
        except AutoGLMError as exc:
            _fail(exc)
    if json_out:
        _print_json(out)
        return
    files = out["source"]["artifacts"]
    console.print(f"uploaded [bold]{name}[/bold]: {len(files)} files, task types {task_type}")
