"""The handler side every training task type shares: threads, progress, checkpoints, resume.

``run_training(ctx, job, params.distributed)`` is all a training handler calls: it splits the
task's CPU allotment across ranks, reports each step (loss, samples/s, ETA) as progress,
stores a checkpoint per epoch as artifacts (tensors as safetensors, a JSON manifest naming
them), and when the task is a retry of one whose worker died, starts from the newest of them.
"""

from __future__ import annotations

import io
import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from open_autoglm.errors import AutoGLMError
from open_autoglm.ml.training.checkpoint import MANIFEST_FORMAT
from open_autoglm.ml.training.fit import FitResult, StepEvent, fit, scratch_dir
from open_autoglm.ml.training.job import TrainJob
from open_autoglm.ml.training.progress import StepReporter
from open_autoglm.ml.training.ranks import Resume
from open_autoglm.ml.training.spec import DistributedParams
from open_autoglm.tasks.base import TaskContext

__all__ = ["curves_png", "find_checkpoint", "register_model", "run_training"]

MANIFEST_PREFIX = "checkpoint-epoch"


def run_training(
    ctx: TaskContext,
    job: TrainJob,
    dist: DistributedParams,
    *,
    checkpoints: bool = True,
    span: tuple[float, float] = (0.0, 1.0),
    tags: Mapping[str, Any] | None = None,
) -> FitResult:
    """Train ``job`` for the task behind ``ctx``; resume from its own last checkpoint if any.

    A task that trains several jobs gives each a ``job.name`` (their checkpoints stay apart),
    its share ``span`` of the task's progress, and ``tags`` every progress event carries.
    """
    with scratch_dir() as scratch:
        found = find_checkpoint(ctx, dist, job.name) if checkpoints else None
        resume, start = (None, 0) if found is None else _materialise(ctx, found, scratch)
        if found is not None:
            ctx.log(f"resuming from the checkpoint of epoch {found['epoch'] + 1}")
        reporter = StepReporter(epochs=job.epochs, start_epoch=start)
        extra = dict(tags or {})

        def on_step(ev: StepEvent) -> None:
            report = reporter.step(
                time.monotonic(),
                epoch=ev.epoch,
                step=ev.step,
                steps_per_epoch=ev.steps_per_epoch,
                loss=ev.loss,
                samples=ev.samples,
                seconds=ev.seconds,
            )
            if report is not None:
                fraction = span[0] + (span[1] - span[0]) * report.pop("fraction")
                message = report.pop("message")
                ctx.progress(
                    fraction, f"{job.name}: {message}" if job.name else message, **report, **extra
                )

        def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
            shown = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if k != "epoch")
            ctx.log(f"{job.name + ' ' if job.name else ''}epoch {epoch + 1}/{job.epochs}: {shown}")

        # the best weights' artifact: rank 0 writes them only when the best epoch changes,
        # and every manifest names the newest (a retry starts from its manifest's)
        best = None if found is None else found.get("best_weights")

        def save_shards(epoch: int, shards: dict[int, tuple[str, str]]) -> None:
            nonlocal best
            best = _save_checkpoint(ctx, dist, epoch, shards, job.name, best)

        ctx.log(
            f"training{' ' + job.name if job.name else ''}: {dist.strategy.value} x{dist.world_size}, {dist.precision.value}, "
            f"{job.epochs} epochs, {max(1, ctx.cpu_threads // dist.world_size)} thread(s) per rank"
        )
        return fit(
            job,
            dist,
            threads=ctx.cpu_threads,
            on_step=on_step,
            on_epoch=on_epoch,
            check_cancelled=ctx.check_cancelled,
            log=ctx.log,
            checkpoint_dir=scratch if checkpoints else None,
            shard_sink=save_shards if checkpoints else None,
            resume=resume,
            resumed_from_epoch=None if found is None else int(found["epoch"]),
        )


def _manifest_prefix(name: str) -> str:
    return f"checkpoint-{name}-epoch" if name else MANIFEST_PREFIX


def _save_checkpoint(
    ctx: TaskContext,
    dist: DistributedParams,
    epoch: int,
    shards: dict[int, tuple[str, str]],
    name: str = "",
    best: str | None = None,
) -> str | None:
    """Store one epoch's shards and its manifest; returns the best weights' artifact id, the
    one rank 0 wrote with this epoch or else ``best``, the last one stored."""
    entries = []
    for rank in sorted(shards):
        tensors_path, meta_path = shards[rank]
        if rank == 0:
            trainer = json.loads(Path(meta_path).read_bytes()).get("trainer") or {}
            if trainer.get("best_file"):
                best = _store(ctx, trainer["best_file"], "application/x-safetensors")
        tensors = _store(ctx, tensors_path, "application/x-safetensors")
        meta = _store(ctx, meta_path, "application/json")
        entries.append({"rank": rank, "tensors": tensors, "meta": meta})
    manifest = {
        "format": MANIFEST_FORMAT,
        "epoch": epoch,
        "strategy": dist.strategy.value,
        "world_size": dist.world_size,
        "shards": entries,
        "best_weights": best,
    }
    ctx.save_artifact(
        json.dumps(manifest).encode(),
        media_type="application/json",
        name=f"{_manifest_prefix(name)}{epoch:04d}.json",
    )
    return best


def _store(ctx: TaskContext, path: str, media_type: str) -> str:
    data = Path(path).read_bytes()
    os.unlink(path)  # the artifact store holds it now; scratch stays small
    return str(ctx.save_artifact(data, media_type=media_type, name=Path(path).name)["id"])


def find_checkpoint(
    ctx: TaskContext, dist: DistributedParams, name: str = ""
) -> dict[str, Any] | None:
    """The newest checkpoint manifest this task recorded for job ``name``, if it fits ``dist``."""
    try:
        reader = ctx.service("tasks")
    except KeyError:
        return None
    found = reader.own_artifacts(ctx.task_id, _manifest_prefix(name))
    if not found:
        return None
    newest = max(found, key=lambda a: a["name"])
    manifest: dict[str, Any] = json.loads(ctx.load_artifact(newest["id"]))
    if manifest.get("format") != MANIFEST_FORMAT:
        return None
    if (manifest["strategy"], manifest["world_size"]) != (dist.strategy.value, dist.world_size):
        ctx.log(
            f"checkpoint of epoch {manifest['epoch'] + 1} is for {manifest['strategy']} "
            f"x{manifest['world_size']}; starting over",
            level="warning",
        )
        return None
    return manifest


def _materialise(
    ctx: TaskContext, manifest: dict[str, Any], scratch: str
) -> tuple[dict[int, Resume], int]:
    """Write a manifest's shards where ranks can read them; returns (per-rank resume, epoch)."""
    best = None
    if manifest.get("best_weights"):
        best = os.path.join(scratch, "resume-best.safetensors")
        Path(best).write_bytes(ctx.load_artifact(manifest["best_weights"]))
    resume: dict[int, Resume] = {}
    for entry in manifest["shards"]:
        rank = int(entry["rank"])
        tensors = os.path.join(scratch, f"resume-rank{rank:02d}.safetensors")
        meta = os.path.join(scratch, f"resume-rank{rank:02d}.json")
        Path(tensors).write_bytes(ctx.load_artifact(entry["tensors"]))
        Path(meta).write_bytes(ctx.load_artifact(entry["meta"]))
        resume[rank] = Resume(tensors, meta, best if rank == 0 else None)
    return resume, int(manifest["epoch"]) + 1


def curves_png(
    history: Sequence[dict[str, float]],
    panels: Sequence[tuple[str, Sequence[str]]],
    *,
    title: str = "",
) -> bytes:
    """One panel per ``(y label, metric keys)`` against epoch, as PNG bytes (matplotlib Agg)."""
    import matplotlib

    matplotlib.use("Agg")  # headless: workers have no display
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4 * len(panels), 3.2), dpi=100)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    epochs = [h["epoch"] + 1 for h in history]
    for ax, (label, keys) in zip(axes, panels, strict=True):
        for key in keys:
            if history and key in history[0]:
                ax.plot(epochs, [h[key] for h in history], marker="o", label=key)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def register_model(ctx: TaskContext, *, name: str, **entry: Any) -> str | None:
    """Register the trained model with the models service; None (and a warning) if it can't."""
    try:
        models = ctx.service("models")
    except KeyError:
        ctx.log("no models service here; the model is reachable through its artifacts")
        return None
    try:
        # A key's trained model is its own (and admins'), as its task is.
        owner = ctx.service("tasks").owner_of(ctx.task_id)
    except KeyError:
        owner = None
    try:
        models.register(name=name, private_to=owner, **entry)
    except AutoGLMError as exc:  # e.g. the name is taken: training still succeeded
        ctx.log(f"model registration failed: {exc.message}", level="warning")
        return None
    return name
