"""The training loop one rank runs: the same code for one process, DDP and FSDP.

Each global batch is split ``indices[rank::world]``; a rank's loss is its per-sample losses
summed and divided by the global batch size, times ``world`` because DDP and FSDP average
gradients over ranks. So every step's gradient is the global batch's mean gradient, whatever
the world size, and runs with 1, 2 or N ranks take the same steps.

Evaluation runs on rank 0 after every epoch while the other ranks wait at the stop broadcast:
the ranks already hold every core this task was given, and an exact, shared stop epoch keeps
runs reproducible. Messages to the supervisor (:mod:`open_autoglm.ml.training.fit`) go through
``outbox``: a queue across processes, a plain function call in one process.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import os
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from open_autoglm.ml.training.checkpoint import TrainerState, load_shard, save_shard
from open_autoglm.ml.training.job import TrainJob
from open_autoglm.ml.training.spec import DistributedParams, Precision, Strategy

__all__ = ["RankPlan", "Resume", "die_with", "run_rank"]

Outbox = Callable[[tuple[Any, ...]], None]


@dataclass(frozen=True)
class Resume:
    """Files of the checkpoint a rank starts from (written by the supervisor before start)."""

    tensors: str
    meta: str
    best: str | None  # rank 0: the best epoch's full weights so far


@dataclass(frozen=True)
class RankPlan:
    rank: int
    world: int
    dist: DistributedParams
    threads: int
    checkpoint_dir: str | None  # None: no checkpoints
    resume: Resume | None = None
    port: int = 0
    master_addr: str = "127.0.0.1"  # rank 0's host: another node when ranks are Ray actors
    launcher: str = "process"  # or "ray actor": said in the rank's start message
    supervisor: int = 0  # pid whose exit ends this rank (0: none, e.g. Ray actors)


def run_rank(
    job: TrainJob,
    plan: RankPlan,
    outbox: Outbox,
    check_cancelled: Callable[[], None] | None = None,
) -> None:
    """Train ``job`` as rank ``plan.rank``; reports ``started``, ``step``, ``epoch``, ``shard``,
    ``result`` (rank 0) and ``done``."""
    torch.set_num_threads(max(1, plan.threads))
    if plan.supervisor:
        die_with(plan.supervisor)
    if plan.world > 1:
        os.environ["MASTER_ADDR"] = plan.master_addr
        os.environ["MASTER_PORT"] = str(plan.port)
        dist.init_process_group("gloo", rank=plan.rank, world_size=plan.world)
    outbox(("started", plan.rank, os.getpid(), plan.launcher))
    try:
        _Loop(job, plan, outbox, check_cancelled).run()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


class _Loop:
    def __init__(
        self,
        job: TrainJob,
        plan: RankPlan,
        outbox: Outbox,
        check_cancelled: Callable[[], None] | None,
    ) -> None:
        self.job, self.plan, self.outbox, self.check_cancelled = job, plan, outbox, check_cancelled
        torch.manual_seed(job.seed)
        self.model = job.build_model()  # (unwrapped) the same initial weights on every rank
        self.trainee = self._wrap(self.model)
        self.optimizer = job.make_optimizer(self.trainee)
        steps = len(job.global_batches(0))
        self.scheduler = job.make_scheduler(self.optimizer, steps * job.epochs)
        # sampling randomness differs per rank (neighbour sampling, augmentation), dropout too
        self.generator = torch.Generator().manual_seed(job.seed * 1000 + plan.rank)
        torch.manual_seed(job.seed * 1000 + plan.rank)
        self.stopper = job.make_stopper()
        self.history: list[dict[str, float]] = []
        self.start_epoch = 0
        self.best: dict[str, Tensor] | None = None
        self.best_unsaved = False  # rank 0: the best weights changed since the last checkpoint
        self.evaluator: nn.Module | None = None
        self.busy = 0.0
        self.samples = 0
        if plan.resume is not None:
            self._restore(plan.resume)

    # -- setup -----------------------------------------------------------------------------

    def _wrap(self, model: nn.Module) -> nn.Module:
        strategy = self.plan.dist.strategy
        if strategy is Strategy.DDP:
            from torch.nn.parallel import DistributedDataParallel

            return DistributedDataParallel(model)
        if strategy is Strategy.FSDP:
            from torch.distributed.fsdp import fully_shard

            for unit in self.job.shard_units(model):
                fully_shard(unit)
            fully_shard(model)
        return model

    def _restore(self, resume: Resume) -> None:
        loaded = load_shard(
            resume.tensors,
            resume.meta,
            model=self.trainee if self.plan.dist.strategy is Strategy.FSDP else self.model,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            generator=self.generator,
        )
        self.start_epoch = loaded.epoch + 1
        if (trainer := loaded.trainer) is not None:  # rank 0 carries the loop's own state
            self.history = list(trainer.history)
            self.stopper = type(self.stopper)(**trainer.stopper)
            if trainer.stop:
                self.start_epoch = self.job.epochs
        if resume.best is not None and self.plan.rank == 0:
            self.best = load_file(resume.best)  # saved: the resumed checkpoint names it
        self.start_epoch = int(self._broadcast(self.start_epoch))

    # -- loop ------------------------------------------------------------------------------

    def run(self) -> None:
        job, plan = self.job, self.plan
        for epoch in range(self.start_epoch, job.epochs):
            losses = self._train_epoch(epoch)
            full = self._full_state()
            stop = 0
            if plan.rank == 0:
                assert full is not None
                metrics = {"epoch": float(epoch), "loss": losses, **self._evaluate(full)}
                self.history.append(metrics)
                if self.stopper.update(epoch, metrics):
                    self.best = {k: v.clone() for k, v in full.items()}
                    self.best_unsaved = True
                stop = int(self.stopper.should_stop)
                self.outbox(("epoch", epoch, metrics))
            stop = int(self._broadcast(stop))
            self._checkpoint(epoch, bool(stop))
            if stop:
                break
        # no best weights (resumed after the last epoch): the current ones, gathered by all
        if self._broadcast(int(self.best is None) if plan.rank == 0 else 0):
            full = self._full_state()
            self.best = None if full is None else {k: v.clone() for k, v in full.items()}
        if plan.rank == 0:
            assert self.best is not None
            # numpy, pickled by value: a tensor would travel as a shared-memory handle that
            # dies with this process
            arrays = {k: v.detach().contiguous().numpy() for k, v in self.best.items()}
            self.outbox(("result", self.history, self.stopper.best_epoch, arrays))
        self.outbox(("done", plan.rank, self.samples, self.busy, _peak_rss()))

    def _train_epoch(self, epoch: int) -> float:
        job, rank, world = self.job, self.plan.rank, self.plan.world
        batches = job.global_batches(epoch)
        total, count = 0.0, 0
        for step, indices in enumerate(batches):
            if len(indices) < world:
                continue  # a rank with no samples would stall the collectives
            if self.check_cancelled is not None:
                self.check_cancelled()
            t0 = time.perf_counter()
            batch = job.collate(indices[rank::world], self.generator)
            self.trainee.train()
            with self._autocast():
                per_sample = job.sample_losses(self.trainee, batch)
            loss = per_sample.float().sum() * (world / len(indices))
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            self.optimizer.step()
            if self.scheduler is not None:
                self.scheduler.step()
            global_loss = float(self._all_sum(loss.detach()) / world)
            elapsed = time.perf_counter() - t0
            self.busy += elapsed
            self.samples += len(indices)
            total += global_loss
            count += 1
            if rank == 0:
                self.outbox(("step", epoch, step, len(batches), global_loss, len(indices), elapsed))
        return total / max(count, 1)

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.plan.dist.precision is Precision.BF16:
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _evaluate(self, full: dict[str, Tensor]) -> dict[str, float]:
        if self.plan.dist.strategy is not Strategy.FSDP:
            model = self.model  # DDP's module holds the full weights, equal on every rank
        else:  # an unwrapped copy: FSDP's parameters are shards
            if self.evaluator is None:
                torch.manual_seed(self.job.seed)
                self.evaluator = self.job.build_model()
            self.evaluator.load_state_dict(full)
            model = self.evaluator
        model.eval()
        with torch.no_grad(), self._autocast():
            metrics = self.job.evaluate(model)
        return {k: float(v) for k, v in metrics.items()}

    def _full_state(self) -> dict[str, Tensor] | None:
        """The whole model's weights on rank 0 (an all-gather under FSDP), None elsewhere.

        Without FSDP these are the live weights, not a copy: clone what must outlive a step.
        """
        if self.plan.dist.strategy is Strategy.FSDP:
            from torch.distributed.checkpoint.state_dict import (
                StateDictOptions,
                get_model_state_dict,
            )

            state = get_model_state_dict(
                self.trainee, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
            )
            return cast(dict[str, Tensor], state) if self.plan.rank == 0 else None
        if self.plan.rank != 0:
            return None
        return {k: v.detach() for k, v in self.model.state_dict().items()}

    def _checkpoint(self, epoch: int, stop: bool) -> None:
        directory = self.plan.checkpoint_dir
        if directory is None:
            return
        trainer = None
        if self.plan.rank == 0:
            best_file = None
            if self.best is not None and self.best_unsaved:
                # written once per best epoch; the supervisor's manifests name the last one
                # written until another replaces it, so a run resumed from any ends with them
                best_file = os.path.join(
                    directory, f"best-epoch{self.stopper.best_epoch:04d}.safetensors"
                )
                save_file({k: v.contiguous() for k, v in self.best.items()}, best_file)
                self.best_unsaved = False
            trainer = TrainerState(
                epoch=epoch,
                history=copy.deepcopy(self.history),
                stopper=dataclasses.asdict(self.stopper),
                stop=stop,
                best_file=best_file,
            )
        tensors, meta = save_shard(
            directory,
            epoch=epoch,
            rank=self.plan.rank,
            model=self.trainee if self.plan.dist.strategy is Strategy.FSDP else self.model,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            generator=self.generator,
            trainer=trainer,
        )
        self.outbox(("shard", epoch, self.plan.rank, str(tensors), str(meta)))

    # -- collectives (no-ops in one process) -----------------------------------------------

    def _broadcast(self, value: int) -> int:
        if self.plan.world == 1:
            return value
        flag = torch.tensor([value], dtype=torch.int64)
        dist.broadcast(flag, src=0)
        return int(flag[0])

    def _all_sum(self, value: Tensor) -> Tensor:
        if self.plan.world == 1:
            return value
        value = value.clone()
        dist.all_reduce(value)
        return value


def die_with(supervisor: int) -> None:
    """Exit when the supervisor process exits: a cancelled or killed task leaves no rank
    training on. (The forkserver's own end is no signal: it lives while any rank does.)"""
    import select
    import threading

    try:
        fd = os.pidfd_open(supervisor)
    except ProcessLookupError:
        os._exit(1)  # already gone
    except (AttributeError, OSError):  # no pidfd here: poll instead
        fd = None

    def watch() -> None:
        if fd is not None:
            select.select([fd], [], [])  # readable once the process has exited
        else:
            while os.getppid() != 1 and _alive(supervisor):
                time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="autoglm-supervisor-watch", daemon=True).start()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _peak_rss() -> int:
    """This process's peak resident set, bytes (Linux reports KiB)."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
