"""DAG rendering: a layered layout and a real PNG."""

from __future__ import annotations

from pathlib import Path

from open_autoglm.spec.workflow import load_workflow, validate_workflow
from open_autoglm.workflows.graph import STATE_COLOURS, layout, render_workflow_png

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "workflows" / "document_triage.yaml"

DIAMOND = {
    "name": "diamond",
    "steps": [
        {"name": "top", "task": {"task_type": "echo"}},
        {"name": "left", "depends_on": ["top"], "task": {"task_type": "echo"}},
        {"name": "right", "depends_on": ["top"], "task": {"task_type": "echo"}},
        {"name": "bottom", "depends_on": ["left", "right", "top"], "task": {"task_type": "echo"}},
    ],
}


def test_layout_layers_by_longest_path() -> None:
    pos = layout(validate_workflow(DIAMOND))
    assert {n: y for n, (_, y) in pos.items()} == {"top": 0, "left": 1, "right": 1, "bottom": 2}
    assert pos["left"][0] != pos["right"][0]
    assert pos["top"][0] == pos["bottom"][0] == 0.0  # centred under/over the pair


def test_render_png_with_states(tmp_path: Path) -> None:
    spec = validate_workflow(load_workflow(EXAMPLE))
    states = {
        "embed": "succeeded",
        "classify": "succeeded",
        "escalate": "skipped",
        "summary": "running",
    }
    out = render_workflow_png(spec, tmp_path / "dag.png", states=states)
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image as mpimg

    pixels = mpimg.imread(out)
    # The succeeded colour must appear somewhere in the picture.
    green = tuple(int(STATE_COLOURS["succeeded"][i : i + 2], 16) / 255 for i in (1, 3, 5))
    close = (abs(pixels[..., :3] - green) < 0.02).all(axis=-1)
    assert close.sum() > 100
