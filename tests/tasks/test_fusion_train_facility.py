"""fusion-train's handler on the training facility: two DDP ranks, a checkpoint per strategy
and epoch kept apart by strategy, progress tagged with the strategy, curves as PNG."""

from __future__ import annotations

import json
from typing import Any

import torch

from helpers.tables import review_rows
from open_autoglm.executors.context import InlineContext
from open_autoglm.tasks.multimodal import FusionTrainParams, fusion_task_types

torch.set_num_threads(1)
TYPES = {t.name: t for t in fusion_task_types()}
SCHEMA: dict[str, Any] = {
    "categorical": ["Division Name", "Department Name", "Class Name"],
    "numeric": ["Age", "Positive Feedback Count"],
    "label": "Recommended IND",
}


def test_tabular_fusion_on_two_ddp_ranks_checkpoints_each_epoch() -> None:
    params = FusionTrainParams.model_validate(
        {
            "schema": SCHEMA,
            "strategy": "tabular",
            "epochs": 2,
            "batch_size": 64,
            "patience": 0,
            "distributed": {"strategy": "ddp", "world_size": 2},
        }
    )
    assert TYPES["fusion-train"].resources_for(params) == {"cpu": 2.0}
    ctx = InlineContext(
        task_type="fusion-train",
        input={"rows": review_rows(300)},
        params=params,
        cpu_threads=2,
        task_id="f1",
    )
    out = TYPES["fusion-train"].handler(ctx)
    result = out["results"]["tabular"]
    assert result["epochs_run"] == 2 and 0.0 <= result["metrics"]["accuracy"] <= 1.0
    names = [a["name"] for a in ctx.artifacts]
    manifests = sorted(n for n in names if n.startswith("checkpoint-"))
    assert manifests == ["checkpoint-tabular-epoch0000.json", "checkpoint-tabular-epoch0001.json"]
    last = json.loads(ctx.blobs[next(a["id"] for a in ctx.artifacts if a["name"] == manifests[-1])])
    assert (last["strategy"], last["world_size"], len(last["shards"])) == ("ddp", 2, 2)
    steps = [d for kind, d in ctx.events if kind == "progress" and "step" in d]
    assert steps and all(d["strategy"] == "tabular" for d in steps)
    assert steps[-1]["fraction"] == 1.0  # the one strategy's share ends the task's progress
    assert ctx.blobs[result["artifacts"]["curves"]].startswith(b"\x89PNG")
