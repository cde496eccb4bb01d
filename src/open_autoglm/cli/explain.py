"""``autoglm explain``: why a model predicted what it did, in the terminal and as pictures."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.text import Text

from open_autoglm import errors
from open_autoglm.cli.common import JsonOpt, KeyOpt, UrlOpt, fail, print_json

__all__ = ["app"]

app = typer.Typer(help="Explain a prediction: token, feature and edge attributions.")
console = Console()

_PICTURE_NAMES = {
    "token_heatmap_html": "token-heatmap.html",
    "token_heatmap_png": "token-heatmap.png",
    "top_tokens_png": "top-tokens.png",
    "top_features_png": "top-features.png",
    "subgraph_png": "subgraph.png",
}


def _tokens(item: dict[str, Any]) -> Text:
    """Tokens coloured by attribution: green for the target, red against."""
    scale = max((abs(s) for s in item["scores"]), default=0.0) or 1.0
    line = Text()
    for token, score in zip(item["tokens"], item["scores"], strict=True):
        strength = int(255 * (1 - min(1.0, abs(score) / scale) * 0.8))
        colour = (
            f"rgb({strength},255,{strength})" if score >= 0 else f"rgb(255,{strength},{strength})"
        )
        line.append(token, style=f"black on {colour}")
        line.append(" ")
    return line


def _show(result: dict[str, Any]) -> None:
    for e in result.get("explanations", []):
        if "tokens" in e:
            console.print(f"[bold]{e['target']}[/] output {e['output']:.4f} "
                          f"(baseline {e['baseline_output']:.4f}, gap {e['convergence_delta']})")  # fmt: skip
            console.print(_tokens(e))
        elif "a" in e:
            console.print(f"[bold]similarity[/] {e['similarity']:.4f}")
            console.print(_tokens(e["a"]))
            console.print(_tokens(e["b"]))
        else:
            console.print(f"[bold]node {e['node']}[/]: {e['label']} ({e['probability']:.3f}); "
                          f"fidelity+ {e['fidelity_plus']:.3f} vs random {e['fidelity_plus_random']:.3f}")  # fmt: skip
            for f in e["top_features"][:5]:
                console.print(f"  feature {f['name']}: {f['score']:+.4f}")
            console.print("  top edges: " + ", ".join(f"{a}->{b}" for a, b in e["top_edges"][:5]))
    if "global" in result:
        top = result["global"].get("top_tokens") or result["global"].get("top_features") or []
        console.print(
            "[bold]overall[/]: " + ", ".join(f"{t['name']} {t['score']:+.3f}" for t in top)
        )


@app.callback(invoke_without_command=True)
def explain(
    task_id: Annotated[str | None, typer.Argument(help="explain the prediction this task made")] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="registered model")] = None,
    inputs: Annotated[list[str] | None, typer.Option("--input", "-i", help="a text (repeat for more)")] = None,
    pair: Annotated[str | None, typer.Option(help="embedding models: the other text")] = None,
    nodes: Annotated[list[str] | None, typer.Option("--node", help="graph models: a node id")] = None,
    method: Annotated[str, typer.Option(help="integrated-gradients | shap | gnnexplainer")] = "integrated-gradients",
    target: Annotated[str | None, typer.Option(help="class to explain (default: predicted)")] = None,
    steps: Annotated[int, typer.Option(help="integration steps")] = 32,
    out: Annotated[Path | None, typer.Option(help="save the pictures in this directory")] = None,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    json_out: JsonOpt = False,
) -> None:  # fmt: skip
    """Explain TASK_ID's prediction, or --model M on --input texts / --node ids."""
    from open_autoglm.client import Client

    if task_id is None and model is None:
        raise typer.BadParameter("give a TASK_ID or --model")
    params: dict[str, Any] = {"method": method, "steps": steps}
    if target is not None:
        params["target"] = target
    if pair is not None:
        params["pair"] = pair
    if nodes:
        params["node_ids"] = nodes
    payload: Any = None if not inputs else (inputs[0] if len(inputs) == 1 else inputs)
    with Client(url, api_key=api_key) as c:
        try:
            with console.status("explaining..."):
                result = c.explain(model, payload, task_id=task_id, **params)
            saved = []
            if out is not None:
                out.mkdir(parents=True, exist_ok=True)
                for key, artifact in (result.get("pictures") or {}).items():
                    path = out / _PICTURE_NAMES.get(key, key)
                    path.write_bytes(c.download_artifact(artifact))
                    saved.append(str(path))
        except errors.AutoGLMError as exc:
            fail(exc)
    if json_out:
        print_json(result)
        return
    _show(result)
    for path in saved:
        console.print(f"saved {path}")
