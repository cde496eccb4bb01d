"""The training facility: DDP and FSDP take the steps one process takes; checkpoints resume exactly."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from helpers.polling import alive_after
from helpers.training_jobs import BlobsJob, kill_supervisor, supervise_long_run
from open_autoglm.ml.training.fit import FitResult, fit
from open_autoglm.ml.training.ranks import Resume
from open_autoglm.ml.training.spec import DistributedParams

# 320 training samples / 32 per global batch = 10 steps an epoch: 5 epochs = 50 steps
EPOCHS = 5


def _run(dist: DistributedParams, **kw: object) -> tuple[list[float], FitResult]:
    losses: list[float] = []
    result = fit(
        BlobsJob(epochs=EPOCHS),
        dist,
        threads=dist.world_size,
        on_step=lambda e: losses.append(e.loss),
        **kw,
    )  # type: ignore[arg-type]
    return losses, result


@pytest.fixture(scope="module")
def single() -> tuple[list[float], FitResult]:
    return _run(DistributedParams())


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_ranks_match_one_process_over_50_steps(
    single: tuple[list[float], FitResult], strategy: str
) -> None:
    ref_losses, ref = single
    losses, result = _run(DistributedParams(strategy=strategy, world_size=2))
    assert len(losses) == len(ref_losses) == 50
    rel = abs(losses[-1] - ref_losses[-1]) / abs(ref_losses[-1])
    assert rel <= 1e-4, (losses[-1], ref_losses[-1])
    # the weights too, not just the loss: FSDP's gathered state equals the 1-process one
    for key, value in ref.state.items():
        torch.testing.assert_close(result.state[key], value, rtol=1e-4, atol=1e-5)
    assert result.samples == ref.samples == 50 * 32


def test_training_learns_and_keeps_the_best_epoch(single: tuple[list[float], FitResult]) -> None:
    losses, result = single
    assert losses[-1] < losses[0] / 3
    assert result.metrics["val_acc"] > 0.9
    best = min(result.history, key=lambda h: h["val_loss"])
    assert result.best_epoch == int(best["epoch"])


def test_bf16_autocast_trains_to_the_same_accuracy(single: tuple[list[float], FitResult]) -> None:
    _, ref = single
    losses, result = _run(DistributedParams(precision="bf16"))
    assert losses[-1] != single[0][-1]  # autocast really ran in bfloat16
    assert abs(result.metrics["val_acc"] - ref.metrics["val_acc"]) <= 0.02


def _checkpointed(
    dist: DistributedParams, directory: Path
) -> tuple[list[float], dict[int, dict[int, tuple[str, str]]]]:
    kept: dict[int, dict[int, tuple[str, str]]] = {}
    keep_dir = directory / "kept"
    keep_dir.mkdir()

    def sink(epoch: int, shards: dict[int, tuple[str, str]]) -> None:
        kept[epoch] = {}
        for rank, (tensors, meta) in shards.items():
            kept[epoch][rank] = (
                shutil.copy(tensors, keep_dir),
                shutil.copy(meta, keep_dir),
            )
        # rank 0 names the best-weights file in its meta; keep it too

    work = directory / "work"
    work.mkdir()
    losses, _ = _run(dist, checkpoint_dir=str(work), shard_sink=sink)
    return losses, kept


@pytest.mark.parametrize("strategy,world", [("none", 1), ("fsdp", 2)])
def test_resuming_from_a_checkpoint_takes_the_same_next_steps(
    tmp_path: Path, strategy: str, world: int
) -> None:
    dist = DistributedParams(strategy=strategy, world_size=world)
    full, kept = _checkpointed(dist, tmp_path)
    assert sorted(kept) == list(range(EPOCHS))
    resume = {rank: Resume(tensors, meta, best=None) for rank, (tensors, meta) in kept[2].items()}
    resumed, result = _run(dist, resume=resume, resumed_from_epoch=2)
    # epochs 3 and 4 only (20 steps), each step's loss as in the uninterrupted run
    assert len(resumed) == 20
    for got, want in zip(resumed, full[30:], strict=True):
        assert abs(got - want) <= 1e-5 * abs(want)
    assert [int(h["epoch"]) for h in result.history] == list(range(EPOCHS))
    assert result.resumed_from_epoch == 2


def test_a_run_resumed_after_its_best_epoch_ends_with_that_epochs_weights(tmp_path: Path) -> None:
    """Validation accuracy peaks at epoch 1 here; a run resumed from epoch 3's checkpoint
    must still return epoch 1's weights, written with epoch 1's checkpoint only."""
    import json

    def job() -> BlobsJob:
        return BlobsJob(epochs=EPOCHS, monitor="val_acc", monitor_mode="max")

    dist = DistributedParams()
    work = tmp_path / "work"
    work.mkdir()
    kept: dict[int, tuple[str, str, str]] = {}
    written: list[int] = []  # the epochs whose checkpoint wrote best weights
    best = ""

    def sink(epoch: int, shards: dict[int, tuple[str, str]]) -> None:
        nonlocal best
        tensors, meta = (shutil.copy(p, tmp_path / f"e{epoch}-{Path(p).name}") for p in shards[0])
        if new := json.loads(Path(meta).read_text())["trainer"]["best_file"]:
            written.append(epoch)
            best = shutil.copy(new, tmp_path)
        kept[epoch] = (tensors, meta, best)  # as a manifest names them

    full = fit(job(), dist, threads=1, checkpoint_dir=str(work), shard_sink=sink)
    assert full.best_epoch == 1  # the premise: the best epoch comes before the resumed one
    assert written == [0, 1]  # best weights are written when they change, not every epoch
    tensors, meta, best = kept[3]
    resumed = fit(job(), dist, threads=1, resume={0: Resume(tensors, meta, best=best)})
    assert resumed.best_epoch == 1 and resumed.metrics == full.metrics
    for key, value in full.state.items():
        assert torch.equal(resumed.state[key], value)


def test_ranks_die_with_their_supervisor() -> None:
    """A task's worker killed (cancel, deadline, crash) must not leave ranks training on."""
    assert alive_after(kill_supervisor(supervise_long_run)) == []
