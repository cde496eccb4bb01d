"""Pictures of explanations: token heat maps (HTML and PNG), top-feature bars, subgraphs.

People read attributions faster as colour than as numbers. Every picture is a deterministic
function of the explanation (fixed layout seed), rendered off-screen with matplotlib's Agg
backend, and user text is escaped in HTML.
"""

from __future__ import annotations

import html
import io
from collections.abc import Sequence
from typing import Any

from open_autoglm.ml.explain.base import TokenAttribution

__all__ = ["bar_chart_png", "subgraph_png", "token_heatmap_html", "token_heatmap_png"]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return buf.getvalue()


def _rgba(score: float, scale: float) -> tuple[float, float, float, float]:
    """Green for evidence for the target, red against, alpha by magnitude."""
    a = min(1.0, abs(score) / scale) if scale > 0 else 0.0
    return (0.13, 0.55, 0.13, 0.85 * a) if score >= 0 else (0.8, 0.1, 0.1, 0.85 * a)


def _scale(scores: Sequence[float]) -> float:
    return max((abs(s) for s in scores), default=0.0)


def token_heatmap_html(explanations: Sequence[TokenAttribution]) -> str:
    """A standalone HTML page: one row of coloured tokens per explanation."""
    rows = []
    for e in explanations:
        scale = _scale(e.scores)
        spans = []
        for token, score in zip(e.tokens, e.scores, strict=True):
            r, g, b, a = _rgba(score, scale)
            spans.append(
                f'<span title="{score:+.4f}" style="background: rgba({int(r * 255)},'
                f"{int(g * 255)},{int(b * 255)},{a:.2f}); padding: 2px 3px; margin: 1px;"
                f' border-radius: 3px">{html.escape(token)}</span>'
            )
        head = (
            f"target <b>{html.escape(e.target)}</b>: output {e.output:.4f}, baseline "
            f"{e.baseline_output:.4f}, method {html.escape(e.method)}"
        )
        if e.delta is not None:
            head += f", convergence gap {e.delta:+.2e}"
        rows.append(
            f"<div style='margin: 12px 0'><div>{head}</div><div>{''.join(spans)}</div></div>"
        )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Token attributions</title>"
        "</head><body style='font-family: sans-serif'><h3>Token attributions</h3>"
        "<p>green: evidence for the target; red: against</p>" + "".join(rows) + "</body></html>"
    )


def token_heatmap_png(explanations: Sequence[TokenAttribution], *, width: float = 10.0) -> bytes:
    """Coloured token boxes, wrapped into lines, one block per explanation."""
    plt = _pyplot()
    per_line = 12
    lines: list[tuple[str, list[tuple[str, float]], float]] = []
    for e in explanations:
        pairs = list(zip(e.tokens, e.scores, strict=True))
        title = f"{e.target} ({e.output:.3f})"
        chunks = [pairs[i : i + per_line] for i in range(0, len(pairs), per_line)] or [[]]
        for j, chunk in enumerate(chunks):
            lines.append((title if j == 0 else "", chunk, _scale(e.scores)))
    fig, ax = plt.subplots(figsize=(width, 0.45 * len(lines) + 0.6))
    ax.set_axis_off()
    ax.set_xlim(0, per_line + 2)
    ax.set_ylim(len(lines), -0.5)
    for row, (title, chunk, scale) in enumerate(lines):
        ax.text(0, row, title, va="center", ha="left", fontsize=8, fontweight="bold")
        for col, (token, score) in enumerate(chunk):
            ax.text(
                2 + col, row, token, va="center", ha="left", fontsize=9,
                bbox={"facecolor": _rgba(score, scale), "edgecolor": "none", "pad": 2},
            )  # fmt: skip
    ax.set_title("token attributions (green: for the target, red: against)", fontsize=9)
    return _png(fig)


def bar_chart_png(items: Sequence[dict[str, Any]], *, title: str) -> bytes:
    """Horizontal bars of ``[{"name", "score"}]``, largest magnitude on top."""
    plt = _pyplot()
    names = [str(i["name"]) for i in items][::-1]
    scores = [float(i["score"]) for i in items][::-1]
    fig, ax = plt.subplots(figsize=(6, 0.3 * len(items) + 1))
    ax.barh(names, scores, color=["#228b22" if s >= 0 else "#cc1a1a" for s in scores])
    ax.axvline(0, color="black", linewidth=0.6)
    ax.set_title(title, fontsize=10)
    ax.tick_params(labelsize=8)
    return _png(fig)


def subgraph_png(
    edges: Sequence[tuple[Any, Any]],
    scores: Sequence[float],
    *,
    center: Any,
    title: str,
    max_edges: int = 60,
) -> bytes:
    """The explanatory subgraph: the most important edges around ``center``, width and
    darkness by importance, the explained node in orange."""
    import networkx as nx

    plt = _pyplot()
    order = sorted(range(len(edges)), key=lambda i: (-scores[i], i))[:max_edges]
    graph = nx.Graph()
    graph.add_node(center)
    scale = max((scores[i] for i in order), default=1.0) or 1.0
    for i in order:
        a, b = edges[i]
        if a == b:
            continue
        w = max(0.0, scores[i]) / scale
        if graph.has_edge(a, b):
            w = max(w, graph.edges[a, b]["w"])
        graph.add_edge(a, b, w=w)
    pos = nx.spring_layout(graph, seed=0)
    fig, ax = plt.subplots(figsize=(6, 5))
    ax.set_axis_off()
    weights = [graph.edges[e]["w"] for e in graph.edges]
    nx.draw_networkx_edges(
        graph, pos, ax=ax, width=[0.5 + 3.5 * w for w in weights],
        edge_color=[(0.1, 0.1, 0.5, 0.15 + 0.85 * w) for w in weights],
    )  # fmt: skip
    colors = ["#ff8c00" if n == center else "#87ceeb" for n in graph.nodes]
    nx.draw_networkx_nodes(graph, pos, ax=ax, node_color=colors, node_size=220)
    nx.draw_networkx_labels(graph, pos, ax=ax, font_size=7)
    ax.set_title(title, fontsize=10)
    return _png(fig)
