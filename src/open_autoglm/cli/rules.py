"""``autoglm rules``: validate or evaluate a ruleset file locally; push it to a server and
evaluate stored rulesets there."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from open_autoglm.cli.common import JsonOpt, KeyOpt, UrlOpt, call, fail, human_time, print_json
from open_autoglm.errors import AutoGLMError, ValidationError
from open_autoglm.rules.agenda import Strategy
from open_autoglm.rules.dsl import load_ruleset
from open_autoglm.rules.engine import Engine
from open_autoglm.rules.policy import POLICY_ACTIONS
from open_autoglm.spec.limits import read_document

__all__ = ["app"]

app = typer.Typer(help="Validate and evaluate rulesets.", no_args_is_help=True)


def _read_data(path: Path) -> Any:
    """A JSON or YAML file's content; a ValidationError naming the file when it cannot parse."""
    return read_document(path)


def _show(result: dict[str, Any]) -> None:
    """An evaluation as people read it: the firings, the emitted events, the fact count."""
    console = Console()
    table = Table(title=f"{result['fired']} rule firing(s)")
    for col in ("#", "rule", "salience", "bindings"):
        table.add_column(col)
    for f in result["firings"]:
        table.add_row(str(f["index"]), f["rule"], str(f["salience"]), json.dumps(f["bindings"]))
    console.print(table)
    for e in result["emitted"]:
        console.print(f"[cyan]emit[/cyan] {json.dumps(e, default=str)}")
    console.print(f"{len(result['facts'])} fact(s) in working memory")


@app.command()
def validate(file: Path, json_out: JsonOpt = False) -> None:
    """Check a YAML/JSON ruleset as the server would (its plugins' actions too)."""
    from open_autoglm.cli.offline import validate_ruleset

    try:
        source = _read_data(file)
        if not isinstance(source, dict):
            raise ValidationError(f"{file}: a ruleset is a mapping with 'rules'")
        count = validate_ruleset(source)
    except AutoGLMError as exc:
        fail(exc, as_json=json_out)
    if json_out:
        print_json({"valid": True, "file": str(file), "rules": count})
        return
    Console().print(f"[green]ok[/green] {file}: {count} rule(s)")


@app.command("eval")
def eval_(
    file: Path,
    facts: Annotated[Path, typer.Option("--facts", help="JSON/YAML list of facts")],
    strategy: Annotated[Strategy, typer.Option(help="conflict resolution")] = Strategy.DEPTH,
    max_firings: Annotated[int, typer.Option(help="stop runaway rule sets")] = 10_000,
    json_out: JsonOpt = False,
) -> None:
    """Run a ruleset over facts; show the firings, emitted events and final facts."""
    try:
        _, rules = load_ruleset(file, POLICY_ACTIONS)
        data = _read_data(facts)
        engine = Engine(rules, strategy=strategy, actions=POLICY_ACTIONS)
        engine.assert_facts(data)
        fired = engine.run(max_firings=max_firings)
    except AutoGLMError as exc:
        fail(exc, as_json=json_out)
    result: dict[str, Any] = {
        "fired": fired,
        "firings": [f.to_dict() for f in engine.trace],
        "emitted": engine.emitted,
        "facts": [f.to_dict() for f in engine.facts()],
    }
    if json_out:
        typer.echo(json.dumps(result, indent=2, default=str))
        return
    _show(result)


@app.command()
def push(
    file: Path,
    name: Annotated[
        str | None, typer.Option("--name", help="ruleset name (default: the file's name)")
    ] = None,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Store a ruleset file on the server (validated there; the version counts up)."""
    try:
        source = _read_data(file)
        if not isinstance(source, dict):
            raise ValidationError(f"{file}: a ruleset is a mapping with 'rules'")
    except AutoGLMError as exc:
        fail(exc, as_json=json_out)
    target = name or source.get("name") or file.stem
    row = call(url, api_key, lambda c: c.put_ruleset(target, source))
    if json_out:
        print_json(row)
        return
    Console().print(f"[green]stored[/green] ruleset {row['name']!r} version {row['version']}")


@app.command("remote-eval")
def remote_eval(
    name: str,
    facts: Annotated[Path, typer.Option("--facts", help="JSON/YAML list of facts")],
    strategy: Annotated[Strategy, typer.Option(help="conflict resolution")] = Strategy.DEPTH,
    max_firings: Annotated[int, typer.Option(help="stop runaway rule sets")] = 10_000,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Evaluate a ruleset stored on the server over a facts file, shown as ``eval`` shows it."""
    try:
        data = _read_data(facts)
    except AutoGLMError as exc:
        fail(exc, as_json=json_out)
    result = call(
        url,
        api_key,
        lambda c: c.evaluate_ruleset(name, data, strategy=strategy.value, max_firings=max_firings),
    )
    if json_out:
        typer.echo(json.dumps(result, indent=2, default=str))
        return
    _show(result)


@app.command("list")
def list_(url: UrlOpt = None, api_key: KeyOpt = None, json_out: JsonOpt = False) -> None:
    """List the rulesets stored on the server."""
    rows = call(url, api_key, lambda c: c.list_rulesets())
    if json_out:
        print_json(rows)
        return
    table = Table("name", "version", "updated")
    now = time.time()
    for r in rows:
        table.add_row(
            r["name"], str(r.get("version", "")), human_time(r.get("updated_at"), now=now)
        )
    Console().print(table)
