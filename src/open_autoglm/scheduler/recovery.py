"""Recovery: tasks a dead process left queued or running go back into the queue.

Runs at start-up for whatever no live replica owns, and again whenever another replica's
lease lapses (see ``storage/replicas.py``).

Queued tasks never started (a handler starts only after its ``running`` row is committed),
so they run exactly once. Running tasks may have had side effects: they run again once for
free (at-least-once), and beyond that spend their retries. Online tasks are never replayed;
a task whose type is gone or whose spec no longer validates fails with a reason.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from open_autoglm.errors import TaskTakenOverError
from open_autoglm.scheduler.live_task import LiveTask
from open_autoglm.spec.task import TaskSpec, TaskStatus
from open_autoglm.tasks.base import TaskType

if TYPE_CHECKING:
    from open_autoglm.scheduler.ports import StorageLike

__all__ = ["recover", "taken_over_error", "tell_taken_over"]

log = logging.getLogger(__name__)


def recover(
    storage: StorageLike,
    rows: list[dict[str, Any]],
    *,
    write: Callable[..., Any],
    resolve_type: Callable[[str], TaskType],
    shape: Callable[[TaskSpec, TaskType, Any], tuple[float, int, int]],
    adopt: Callable[[LiveTask], None],
    now: float,
) -> dict[str, int]:
    """Re-queue (through ``adopt``) or fail the claimed queued/running task ``rows``; counts
    by kind."""
    counts = {"requeued": 0, "failed": 0, "queued": 0}
    writes: list[Any] = []

    def fail(row: dict[str, Any], code: str, message: str) -> None:
        error = {"code": code, "message": message}
        writes.append(
            write(
                task_id=row["id"],
                fields={"status": "failed", "finished_at": now, "error": error},
                terminal=True,
                events=[(now, "status", {"status": "failed", "reason": code})],
            )
        )
        counts["failed"] += 1

    adopted: list[LiveTask] = []
    for row in rows:
        try:
            spec = TaskSpec.model_validate(row["spec"])
            ttype = resolve_type(spec.task_type)
            params = ttype.params_model.model_validate(spec.params)
        except Exception as exc:  # type gone (plugin removed) or spec no longer valid
            fail(row, "unrecoverable", f"cannot resume after restart: {exc}")
            continue
        attempts = int(row["attempts"])
        if not row.get("durable", True):
            fail(row, "not_replayed", "online inference is not replayed after a restart")
            continue
        if row["status"] == TaskStatus.RUNNING.value:
            # A crash re-runs a task once for free; beyond that it spends retries.
            if attempts > spec.max_retries + 1:
                fail(row, "worker_lost", "the server died while the task ran; retries spent")
                continue
            writes.append(
                write(
                    task_id=row["id"],
                    fields={"status": "queued"},
                    events=[
                        (now, "status", {"status": "queued", "reason": "requeued after restart"})
                    ],
                )
            )
            counts["requeued"] += 1
        else:
            counts["queued"] += 1
        adopted.append(
            LiveTask(
                id=row["id"],
                spec=spec,
                task_type=ttype,
                params=params,
                status=TaskStatus.QUEUED,
                attempts=attempts,
                created_at=float(row["created_at"]),
                shape=shape(spec, ttype, params),
                principal=row.get("principal"),
            )
        )
    # Requeue records commit before any recovered task can start (and write "running").
    if writes:
        committed: Future[list[Any]] = storage.write_many(writes)
        committed.result()
    for lt in adopted:
        adopt(lt)
    if rows:
        log.info("recovery: %s", counts)
    return counts


def tell_taken_over(lost: list[LiveTask]) -> None:
    """Fail the waiters of tasks another server took over: their state is that server's."""
    for lt in lost:
        log.warning("task %s was taken over by another replica; not running it here", lt.id)
        lt.done.set_exception(taken_over_error(lt))


def taken_over_error(lt: LiveTask) -> TaskTakenOverError:
    """The error a waiter on ``lt`` gets once another server owns it."""
    return TaskTakenOverError(
        f"task {lt.id} was taken over by another server after this one missed its lease; "
        "read it again for the state that counts"
    )
