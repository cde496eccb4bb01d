"""The ``autoglm`` command. It talks to a server through the SDK, or starts one (``serve``)."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import httpx
import orjson
import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from open_autoglm import errors
from open_autoglm.cli import explain as explain_cli
from open_autoglm.cli import fusion as fusion_cli
from open_autoglm.cli import graph as graph_cli
from open_autoglm.cli import keys as keys_cli
from open_autoglm.cli import models as models_cli
from open_autoglm.cli import rules as rules_cli
from open_autoglm.cli import temporal as temporal_cli
from open_autoglm.cli import text as text_cli
from open_autoglm.cli import workflow as workflow_cli
from open_autoglm.cli.common import (
    JsonOpt,
    KeyOpt,
    UrlOpt,
    call,
    console,
    err_console,
    fail,
    human_time,
    print_json,
    unreachable_message,
)
from open_autoglm.spec.task import TERMINAL_STATUSES

__all__ = ["app", "main"]

app = typer.Typer(
    help="Open-AutoGLM: automate language-model and graph-learning work. Commands that talk "
    "to a server use --url, else AUTOGLM_URL, else http://127.0.0.1:8000.",
    no_args_is_help=True,
)

app.add_typer(rules_cli.app, name="rules")
app.add_typer(graph_cli.app, name="graph")
app.add_typer(workflow_cli.app, name="workflow")
app.add_typer(models_cli.app, name="models")

# Sub-commands that need more than a line here live in their own modules.
app.add_typer(fusion_cli.app, name="fusion")
app.add_typer(keys_cli.app, name="keys")
app.add_typer(explain_cli.app, name="explain")
app.add_typer(temporal_cli.app, name="temporal")
app.add_typer(text_cli.app, name="text")
_call = call


def _fail(exc: errors.AutoGLMError) -> None:
    fail(exc)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="bind address")] = None,
    port: Annotated[int | None, typer.Option(help="port")] = None,
    config: Annotated[Path | None, typer.Option(help="TOML config file")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="data directory")] = None,
    bundled_models: Annotated[bool, typer.Option(help="register the bundled models")] = False,
    executor: Annotated[
        str | None,
        typer.Option(
            help="where work runs: 'local' (default) or 'ray' (training as Ray tasks, "
            "embedding/classification replicas as Ray actors)"
        ),
    ] = None,
    ray_address: Annotated[
        str | None,
        typer.Option(help="with --executor ray: a cluster to join (default: a local instance)"),
    ] = None,
    access_log: Annotated[
        bool,
        typer.Option(
            "--access-log", help="log one line per request (method, path, status, ms, task id)"
        ),
    ] = False,
) -> None:
    """Start the server (embedded SQLite and local executor by default)."""
    from open_autoglm.api.lifecycle import serve as serve_api
    from open_autoglm.config import load_settings

    overrides: dict[str, Any] = {}
    if data_dir:
        overrides["data_dir"] = data_dir
    if bundled_models:
        overrides["register_bundled_models"] = True
    if access_log:
        overrides["api"] = {"access_log": True}
    if executor or ray_address:  # deep-merged over the file and the environment
        overrides["executor"] = {"backend": executor or "ray"}
        if ray_address:
            overrides["executor"]["ray_address"] = ray_address
    settings = load_settings(config, **overrides)
    host = host or settings.api.host
    port = port if port is not None else settings.api.port
    # The platform says what it is doing (models loading, runs resumed, requests with
    # --access-log); uvicorn's own lines stay at warning.
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    console.print(f"Open-AutoGLM starting (storage: {settings.storage_url()}) ...")
    if settings.executor.yield_to_replicas:
        from open_autoglm.executors.sched_policy import yield_to_replicas

        yield_to_replicas()  # before any thread starts: they all inherit it
    serve_api(settings, host, port, banner=f"Open-AutoGLM on http://{host}:{port}")


@app.command()
def submit(
    file: Annotated[str, typer.Argument(help="task spec JSON file, or - for stdin")],
    wait: Annotated[bool, typer.Option("--wait", help="wait for the result")] = False,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Submit a task spec (a JSON object), or many at once (a JSON array: all or none)."""
    from open_autoglm.spec.limits import load_json, read_document

    try:
        spec = (
            load_json(sys.stdin.read(), what="stdin") if file == "-" else read_document(Path(file))
        )
    except errors.ValidationError as exc:
        err_console.print(f"[red]error[/red]: {exc.message}")
        raise typer.Exit(1) from None
    if isinstance(spec, list):
        _submit_many(spec, wait, url, api_key, json_out)
        return

    def go(c: Any) -> dict[str, Any]:
        task: dict[str, Any] = c.submit(spec)
        return _wait_live(c, task["id"]) if wait else task

    task = _call(url, api_key, go)
    if json_out:
        print_json(task)
    else:
        console.print(f"task [bold]{task['id']}[/bold] {task['status']}")
        if "result" in task:
            print_json(task["result"])


def _submit_many(
    specs: list[Any], wait: bool, url: str | None, api_key: str | None, json_out: bool
) -> None:
    def go(c: Any) -> list[dict[str, Any]]:
        tasks: list[dict[str, Any]] = c.submit_many(specs)
        if not wait:
            return tasks
        done = []
        with Progress(console=err_console, transient=True) as bar:
            job = bar.add_task(f"waiting for {len(tasks)} tasks", total=len(tasks))
            for t in tasks:
                done.append(c.wait(t["id"]))
                bar.advance(job)
        return done

    tasks = _call(url, api_key, go)
    if json_out:
        print_json(tasks)
        return
    for t in tasks:
        console.print(f"task [bold]{t['id']}[/bold] {t['status']}")


@app.command()
def status(
    task_id: str, url: UrlOpt = None, api_key: KeyOpt = None, json_out: JsonOpt = False
) -> None:
    """Show a task."""
    task = _call(url, api_key, lambda c: c.get(task_id))
    if json_out:
        print_json(task)
        return
    table = Table(show_header=False)
    for key in ("id", "task_type", "model", "status", "priority", "attempts"):
        table.add_row(key, str(task.get(key)))
    now = time.time()
    for key in ("created_at", "started_at", "finished_at"):
        table.add_row(key.removesuffix("_at"), human_time(task.get(key), now=now))
    if task.get("error"):
        table.add_row("error", f"{task['error'].get('code')}: {task['error'].get('message')}")
    if "result" in task:
        table.add_row("result", orjson.dumps(task["result"]).decode()[:2000])
    console.print(table)


def _training_figures(data: dict[str, Any]) -> str:
    """A training step's loss, samples/s and time left, when its progress event has them."""
    parts = []
    if "loss" in data:
        parts.append(f"loss {data['loss']:.4f}")
    if "samples_per_s" in data:
        parts.append(f"{data['samples_per_s']:,.0f} samples/s")
    if "eta_s" in data:
        parts.append(f"ETA {data['eta_s']:.0f}s")
    return "  " + " · ".join(parts) if parts else ""


def _wait_live(c: Any, task_id: str) -> dict[str, Any]:
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    ) as bar:
        job = bar.add_task(f"task {task_id[:8]} queued", total=1.0)
        try:
            for kind, data in c.stream_events(task_id, timeout=3600):
                if kind == "progress":
                    bar.update(
                        job,
                        completed=data.get("fraction", 0.0),
                        description=f"task {task_id[:8]} {data.get('message') or 'running'}"
                        + _training_figures(data),
                    )
                elif kind == "log":
                    bar.console.print(f"[dim]{data.get('message', '')}[/dim]")
                elif kind == "status":
                    bar.update(job, description=f"task {task_id[:8]} {data.get('status')}")
                    if data.get("status") in TERMINAL_STATUSES:
                        bar.update(job, completed=1.0)
                        break
        except Exception:
            pass
    return c.wait(task_id, raise_on_failure=False)  # type: ignore[no-any-return]


@app.command()
def wait(
    task_id: str, url: UrlOpt = None, api_key: KeyOpt = None, json_out: JsonOpt = False
) -> None:
    """Wait for a task, with live progress; exits 1 if it did not succeed."""
    task = _call(url, api_key, lambda c: _wait_live(c, task_id))
    if json_out:
        print_json(task)
    else:
        console.print(f"task [bold]{task['id']}[/bold] {task['status']}")
        if task.get("error"):
            console.print(f"[red]{task['error'].get('code')}[/red]: {task['error'].get('message')}")
        if "result" in task:
            print_json(task["result"])
    if task["status"] != "succeeded":
        raise typer.Exit(1)


@app.command()
def cancel(
    task_id: str, url: UrlOpt = None, api_key: KeyOpt = None, json_out: JsonOpt = False
) -> None:
    """Cancel a queued or running task; prints the state it ends in."""

    def go(c: Any) -> dict[str, Any]:
        c.cancel(task_id)
        # A running task stops at its next cancellation point: report where it ended.
        try:
            return c.wait(task_id, timeout=30, raise_on_failure=False)  # type: ignore[no-any-return]
        except errors.AutoGLMError:
            return c.get(task_id)  # type: ignore[no-any-return]

    task = _call(url, api_key, go)
    if json_out:
        print_json(task)
    else:
        console.print(f"task [bold]{task['id']}[/bold] {task['status']}")


@app.command("prune-online")
def prune_online(
    older_than: Annotated[
        float, typer.Option("--older-than", min=0, help="seconds since the record ended")
    ],
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Delete online inference records (/v1/infer, OpenAI routes) older than --older-than
    seconds now, as storage.online_retention_s does on its own; durable tasks stay."""
    pruned = _call(url, api_key, lambda c: c.prune_online(older_than))
    if json_out:
        print_json({"pruned": pruned, "older_than_s": older_than})
    else:
        console.print(f"deleted {pruned} online inference records older than {older_than:g} s")


@app.command("list")
def list_(
    status_: Annotated[str | None, typer.Option("--status", help="filter by status")] = None,
    task_type: Annotated[str | None, typer.Option(help="filter by task type")] = None,
    limit: Annotated[int, typer.Option(help="at most this many")] = 50,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """List tasks, newest first."""
    tasks = _call(
        url, api_key, lambda c: list(c.list(status=status_, task_type=task_type, limit=limit))
    )
    if json_out:
        print_json(tasks)
        return
    table = Table("id", "type", "model", "status", "priority", "attempts")
    for t in tasks:
        table.add_row(
            t["id"],
            t["task_type"],
            t.get("model") or "",
            t["status"],
            str(t["priority"]),
            str(t["attempts"]),
        )
    console.print(table)


@app.command("task-types")
def task_types(url: UrlOpt = None, api_key: KeyOpt = None, json_out: JsonOpt = False) -> None:
    """List the task types the server knows."""
    types = _call(url, api_key, lambda c: c.task_types())
    if json_out:
        print_json(types)
        return
    table = Table("name", "plugin", "model?", "mode", "description")
    for t in types:
        table.add_row(
            t["name"],
            t["plugin"],
            "yes" if t["requires_model"] else "",
            t["mode"],
            t["description"],
        )
    console.print(table)


@app.command()
def plugins(url: UrlOpt = None, api_key: KeyOpt = None, json_out: JsonOpt = False) -> None:
    """List plugins and their status."""
    items = _call(url, api_key, lambda c: c.plugins())
    if json_out:
        print_json(items)
        return
    table = Table("name", "version", "status", "task types", "reason")
    for p in items:
        table.add_row(p["name"], p["version"], p["status"], ", ".join(p["task_types"]), p["reason"])
    console.print(table)


def main() -> None:
    try:
        app()
    except httpx.TransportError as exc:  # a sub-command that called the SDK directly
        url = str(exc.request.url.copy_with(path="/", query=None)).rstrip("/")
        err_console.print(f"[red]error[/red]: {unreachable_message(url, exc)}", soft_wrap=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
