"""Render a workflow's DAG to PNG with matplotlib, coloured by step state when given.

The layout is computed here (no graphviz): each step's layer is its longest dependency
path from a root, and steps within a layer are ordered by the mean position of their
parents (two barycentre sweeps), which keeps most edges short and uncrossed for the
pipeline shapes workflows have.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from open_autoglm.spec.workflow import WorkflowSpec

__all__ = ["STATE_COLOURS", "layout", "render_workflow_png"]

STATE_COLOURS: Final = {
    "pending": "#d9d9d9",
    "submitted": "#c6dbef",
    "running": "#6baed6",
    "retry_wait": "#fdd0a2",
    "succeeded": "#74c476",
    "failed": "#fb6a4a",
    "timed_out": "#fd8d3c",
    "skipped": "#f0f0f0",
    "cancelled": "#bdbdbd",
}
_DEFAULT_COLOUR: Final = "#e8eef7"


def layout(spec: WorkflowSpec) -> dict[str, tuple[float, float]]:
    """Return ``{step: (x, y)}``: x is the order within a layer, y the layer (0 at the top)."""
    deps = {s.name: list(s.depends_on) for s in spec.steps}
    layer: dict[str, int] = {}

    def depth(name: str, trail: frozenset[str]) -> int:
        if name in layer:
            return layer[name]
        ups = [d for d in deps.get(name, []) if d in deps and d not in trail]
        layer[name] = 1 + max((depth(d, trail | {name}) for d in ups), default=-1)
        return layer[name]

    for s in spec.steps:
        depth(s.name, frozenset())
    layers: dict[int, list[str]] = {}
    for s in spec.steps:
        layers.setdefault(layer[s.name], []).append(s.name)
    pos: dict[str, float] = {}
    for _sweep in range(2):
        for level in sorted(layers):
            names = layers[level]
            for i, n in enumerate(names):
                parents = [pos[d] for d in deps[n] if d in pos and layer[d] < level]
                pos[n] = sum(parents) / len(parents) if parents else pos.get(n, float(i))
            names.sort(key=lambda n: pos[n])
            width = len(names)
            for i, n in enumerate(names):
                pos[n] = i - (width - 1) / 2
    return {n: (pos[n], float(layer[n])) for n in deps}


def render_workflow_png(
    spec: WorkflowSpec,
    path: str | Path,
    *,
    states: Mapping[str, str] | None = None,
    title: str | None = None,
) -> Path:
    """Draw ``spec`` to ``path`` (PNG); ``states`` maps step name to a state value."""
    # Figure + the Agg canvas directly, not pyplot: no global backend switch, no GUI, and
    # safe from worker threads.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import FancyBboxPatch

    coords = layout(spec)
    n_layers = 1 + int(max((y for _, y in coords.values()), default=0))
    widest = max(
        (sum(1 for _, y in coords.values() if y == level) for level in range(n_layers)), default=1
    )
    fig = Figure(figsize=(max(4.0, 2.6 * widest), max(3.0, 1.5 * n_layers + 1)))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    box_w, box_h = 2.0, 0.6
    sx, sy = 2.6, 1.5  # spacing between columns and layers

    def centre(name: str) -> tuple[float, float]:
        x, y = coords[name]
        return x * sx, -y * sy

    for step in spec.steps:
        for dep in step.depends_on:
            if dep not in coords:
                continue
            (x0, y0), (x1, y1) = centre(dep), centre(step.name)
            ax.annotate(
                "",
                xy=(x1, y1 + box_h / 2),
                xytext=(x0, y0 - box_h / 2),
                arrowprops={"arrowstyle": "-|>", "color": "#555555", "lw": 1.2},
            )
    for step in spec.steps:
        x, y = centre(step.name)
        state = (states or {}).get(step.name)
        colour = STATE_COLOURS.get(str(state), _DEFAULT_COLOUR) if state else _DEFAULT_COLOUR
        ax.add_patch(
            FancyBboxPatch(
                (x - box_w / 2, y - box_h / 2),
                box_w,
                box_h,
                boxstyle="round,pad=0.05",
                facecolor=colour,
                edgecolor="#333333",
                linestyle="--" if step.when is not None else "-",
            )
        )
        ax.text(x, y + 0.08, step.name, ha="center", va="center", fontsize=9, weight="bold")
        ax.text(
            x, y - 0.17, _subtitle(step.model_dump(), state), ha="center", va="center", fontsize=7
        )
    xs = [centre(n)[0] for n in coords] or [0.0]
    ys = [centre(n)[1] for n in coords] or [0.0]
    ax.set_xlim(min(xs) - sx / 2 - 0.5, max(xs) + sx / 2 + 0.5)
    ax.set_ylim(min(ys) - sy / 2 - 0.3, max(ys) + sy / 2)
    ax.set_axis_off()
    ax.set_title(title or spec.name)
    out = Path(path)
    fig.savefig(out, dpi=110, bbox_inches="tight")
    return out


def _subtitle(step: Mapping[str, Any], state: str | None) -> str:
    if step.get("workflow"):
        kind = f"workflow {step['workflow']['name']}"
    else:
        kind = str((step.get("task") or {}).get("task_type", "?"))
    tags = [kind]
    if step.get("map") is not None:
        tags.append("map")
    if step.get("when") is not None:
        tags.append("when")
    if step.get("trigger_rule", "all_success") != "all_success":
        tags.append(step["trigger_rule"])
    if state:
        tags.append(str(state))
    return " · ".join(tags)
