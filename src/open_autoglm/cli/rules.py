"""``autoglm rules``: validate a ruleset file, or evaluate it over a facts file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from open_autoglm.errors import AutoGLMError
from open_autoglm.rules.agenda import Strategy
from open_autoglm.rules.dsl import load_ruleset
from open_autoglm.rules.engine import Engine
from open_autoglm.rules.policy import POLICY_ACTIONS

__all__ = ["app"]

app = typer.Typer(help="Validate and evaluate rulesets.", no_args_is_help=True)


def _fail(console: Console, exc: AutoGLMError) -> None:
    console.print(f"[red]error:[/red] {exc.message}")
    for d in exc.details:
        console.print(f"  [yellow]{'.'.join(map(str, d.get('loc', [])))}[/yellow]: {d.get('msg')}")
    raise typer.Exit(code=1)


@app.command()
def validate(file: Path) -> None:
    """Check a YAML/JSON ruleset; list every problem with its location."""
    console = Console()
    try:
        _, rules = load_ruleset(file, POLICY_ACTIONS)
    except AutoGLMError as exc:
        _fail(console, exc)
        return
    console.print(f"[green]ok[/green] {file}: {len(rules)} rule(s)")


@app.command("eval")
def eval_(
    file: Path,
    facts: Annotated[Path, typer.Option("--facts", help="JSON/YAML list of facts")],
    as_json: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
    strategy: Annotated[Strategy, typer.Option(help="conflict resolution")] = Strategy.DEPTH,
    max_firings: Annotated[int, typer.Option(help="stop runaway rule sets")] = 10_000,
) -> None:
    """Run a ruleset over facts; show the firings, emitted events and final facts."""
    console = Console()
    try:
        _, rules = load_ruleset(file, POLICY_ACTIONS)
        text = facts.read_text()
        if facts.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
        engine = Engine(rules, strategy=strategy, actions=POLICY_ACTIONS)
        engine.assert_facts(data)
        fired = engine.run(max_firings=max_firings)
    except AutoGLMError as exc:
        _fail(console, exc)
        return
    result = {
        "fired": fired,
        "firings": [f.to_dict() for f in engine.trace],
        "emitted": engine.emitted,
        "facts": [f.to_dict() for f in engine.facts()],
    }
    if as_json:
        typer.echo(json.dumps(result, indent=2, default=str))
        return
    table = Table(title=f"{fired} rule firing(s)")
    for col in ("#", "rule", "salience", "bindings"):
        table.add_column(col)
    for f in result["firings"]:
        table.add_row(str(f["index"]), f["rule"], str(f["salience"]), json.dumps(f["bindings"]))
    console.print(table)
    for e in engine.emitted:
        console.print(f"[cyan]emit[/cyan] {json.dumps(e, default=str)}")
    console.print(f"{len(result['facts'])} fact(s) in working memory")
