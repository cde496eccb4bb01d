"""Workflow persistence: runs, the task behind each step attempt, run events and callbacks.

The workflow service writes one :class:`RunWrite` per run after every batch of engine
events, all in one transaction, *before* it acts on the engine's instructions: after a crash
the stored state never lags what the outside world was told to do. The tables:

- ``workflow_runs``: the run (spec without its callback secret, inputs, status) and the
  engine's whole state (``WorkflowRun.to_dict``); the secret sits in its own column and is
  only read back to sign callbacks.
- ``workflow_step_tasks``: one row per step attempt: the rendered task and its idempotency
  key (written before the task is submitted), then the task id.
- ``workflow_events``: step and run transitions, for the events route and its SSE stream.
- ``workflow_callbacks`` / ``workflow_callback_attempts``: each callback to deliver and every
  delivery attempt (status, error, timing).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from open_autoglm.errors import NotFoundError
from open_autoglm.storage.tables import JSONText, metadata, replicas

__all__ = [
    "RunWrite",
    "WorkflowRepo",
    "workflow_callback_attempts",
    "workflow_callbacks",
    "workflow_events",
    "workflow_runs",
    "workflow_step_tasks",
]

workflow_runs = sa.Table(
    "workflow_runs",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(32), nullable=False, unique=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("spec", JSONText, nullable=False),  # callback secrets removed
    sa.Column("inputs", JSONText, nullable=False),
    sa.Column("state", JSONText, nullable=False),  # WorkflowRun.to_dict()
    sa.Column("error", sa.Text),
    sa.Column("callback_secret", sa.String(500)),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("finished_at", sa.Float),
    sa.Column("owner", sa.String(32)),  # the replica driving it (storage/replicas.py)
    sa.Column("principal", sa.String(200)),  # whose run: its API key's owner (NULL: no keys)
    sa.Index("ix_workflow_runs_status_seq", "status", "seq"),
    sa.Index("ix_workflow_runs_name_seq", "name", "seq"),
    sa.Index("ix_workflow_runs_owner_status", "owner", "status"),
    sa.Index("ix_workflow_runs_principal_seq", "principal", "seq"),
)

workflow_step_tasks = sa.Table(
    "workflow_step_tasks",
    metadata,
    sa.Column("run_id", sa.String(32), primary_key=True),
    sa.Column("step_id", sa.String(500), primary_key=True),
    sa.Column("attempt", sa.Integer, primary_key=True),
    sa.Column("task", JSONText, nullable=False),  # the TaskSpec dict as submitted
    sa.Column("idempotency_key", sa.String(200), nullable=False),
    sa.Column("task_id", sa.String(32)),
    sa.Column("created_at", sa.Float, nullable=False),
)

workflow_events = sa.Table(
    "workflow_events",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(32), nullable=False),
    sa.Column("ts", sa.Float, nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("data", JSONText, nullable=False),
    sa.Index("ix_workflow_events_run_seq", "run_id", "seq"),
)

workflow_callbacks = sa.Table(
    "workflow_callbacks",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(32), nullable=False, unique=True),
    sa.Column("run_id", sa.String(32), nullable=False),
    sa.Column("event", sa.String(32), nullable=False),
    sa.Column("url", sa.String(2000), nullable=False),
    sa.Column("payload", JSONText, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # pending, delivered, failed
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Index("ix_workflow_callbacks_run", "run_id", "seq"),
    sa.Index("ix_workflow_callbacks_status", "status"),
)

workflow_callback_attempts = sa.Table(
    "workflow_callback_attempts",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("callback_id", sa.String(32), nullable=False),
    sa.Column("run_id", sa.String(32), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("status_code", sa.Integer),
    sa.Column("error", sa.Text),
    sa.Column("ts", sa.Float, nullable=False),
    sa.Column("duration_s", sa.Float, nullable=False),
    sa.Index("ix_workflow_callback_attempts_run", "run_id", "seq"),
)

_RUN_COLUMNS = (
    workflow_runs.c.seq,
    workflow_runs.c.id,
    workflow_runs.c.name,
    workflow_runs.c.status,
    workflow_runs.c.spec,
    workflow_runs.c.inputs,
    workflow_runs.c.error,
    workflow_runs.c.created_at,
    workflow_runs.c.updated_at,
    workflow_runs.c.finished_at,
    workflow_runs.c.principal,
)


@dataclass
class RunWrite:
    """What changed in one run since its last write.

    ``created`` carries the columns of a new run (``name``, ``spec``, ``inputs``,
    ``callback_secret``, ``created_at``); otherwise the row is updated.
    """

    run_id: str
    status: str
    state: dict[str, Any]
    error: str | None
    updated_at: float
    finished_at: float | None = None
    created: dict[str, Any] | None = None
    step_tasks: list[dict[str, Any]] = field(default_factory=list)
    callbacks: list[dict[str, Any]] = field(default_factory=list)
    events: list[tuple[float, str, dict[str, Any]]] = field(default_factory=list)
    # The fence: update the run only while this replica owns it (see storage/writer.py).
    owner: str | None = None


class WorkflowRepo:
    """Reads and writes of the workflow tables; connections never leave this class."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- writes ------------------------------------------------------------------------------

    def save(self, writes: Iterable[RunWrite]) -> set[str]:
        """Apply every write in one transaction; returns the ids of the runs whose writes
        were dropped because another replica owns them now (fenced)."""
        with self.engine.begin() as conn:
            return {w.run_id for w in writes if not self._save_one(conn, w)}

    def _save_one(self, conn: Connection, w: RunWrite) -> bool:
        """One run's write; False if fenced (nothing of it is written)."""
        fields = {
            "status": w.status,
            "state": w.state,
            "error": w.error,
            "updated_at": w.updated_at,
            "finished_at": w.finished_at,
        }
        if w.created is not None:
            conn.execute(workflow_runs.insert().values(id=w.run_id, **w.created, **fields))
        else:
            update = workflow_runs.update().where(workflow_runs.c.id == w.run_id)
            if w.owner is not None:
                update = update.where(workflow_runs.c.owner == w.owner)
            if conn.execute(update.values(**fields)).rowcount == 0:
                return False  # taken over by another replica (or deleted): write nothing
        if w.step_tasks:
            conn.execute(
                workflow_step_tasks.insert(),
                [{"run_id": w.run_id, "created_at": w.updated_at, **r} for r in w.step_tasks],
            )
        if w.callbacks:
            conn.execute(
                workflow_callbacks.insert(),
                [
                    {
                        "run_id": w.run_id,
                        "status": "pending",
                        "attempts": 0,
                        "created_at": w.updated_at,
                        "updated_at": w.updated_at,
                        **c,
                    }
                    for c in w.callbacks
                ],
            )
        if w.events:
            conn.execute(
                workflow_events.insert(),
                [
                    {"run_id": w.run_id, "ts": ts, "kind": kind, "data": data}
                    for ts, kind, data in w.events
                ],
            )
        return True

    def set_task_id(
        self, run_id: str, step_id: str, attempt: int, task_id: str, owner: str | None = None
    ) -> bool:
        """Record the task a step attempt runs as; with ``owner``, only while that replica
        still drives the run (fenced like :meth:`save`). False when nothing was written."""
        update = workflow_step_tasks.update().where(
            workflow_step_tasks.c.run_id == run_id,
            workflow_step_tasks.c.step_id == step_id,
            workflow_step_tasks.c.attempt == attempt,
        )
        if owner is not None:
            runs = workflow_runs.c
            update = update.where(sa.exists().where(runs.id == run_id, runs.owner == owner))
        with self.engine.begin() as conn:
            return bool(conn.execute(update.values(task_id=task_id)).rowcount)

    def record_callback_attempt(
        self, callback_id: str, run_id: str, attempt: dict[str, Any], status: str
    ) -> None:
        """Store one delivery attempt and the callback's status after it."""
        now = time.time()
        with self.engine.begin() as conn:
            conn.execute(
                workflow_callback_attempts.insert().values(
                    callback_id=callback_id,
                    run_id=run_id,
                    attempt=attempt["attempt"],
                    status_code=attempt["status"],
                    error=attempt["error"],
                    ts=attempt["timestamp"],
                    duration_s=attempt["duration_s"],
                )
            )
            # Delivered stays delivered: a replica that lost the run may still be retrying
            # the same callback after the new owner got it through.
            conn.execute(
                workflow_callbacks.update()
                .where(
                    workflow_callbacks.c.id == callback_id,
                    workflow_callbacks.c.status != "delivered",
                )
                .values(status=status, attempts=attempt["attempt"], updated_at=now)
            )

    # -- reads -------------------------------------------------------------------------------

    def get_run(self, run_id: str, *, with_state: bool = True) -> dict[str, Any]:
        cols = (*_RUN_COLUMNS, workflow_runs.c.state) if with_state else _RUN_COLUMNS
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(*cols).where(workflow_runs.c.id == run_id)).first()
        if row is None:
            raise NotFoundError(f"workflow run {run_id} not found")
        return _row(row)

    def callback_secret(self, run_id: str) -> str | None:
        with self.engine.connect() as conn:
            value = conn.execute(
                sa.select(workflow_runs.c.callback_secret).where(workflow_runs.c.id == run_id)
            ).scalar()
        return None if value is None else str(value)

    def list_runs(
        self,
        *,
        status: str | None = None,
        name: str | None = None,
        after_seq: int | None = None,
        limit: int = 50,
        principal: str | None = None,
    ) -> list[dict[str, Any]]:
        """Runs newest first, without their state; ``after_seq`` is the cursor; with
        ``principal``, only that owner's runs."""
        stmt = sa.select(*_RUN_COLUMNS).order_by(workflow_runs.c.seq.desc()).limit(limit)
        if principal is not None:
            stmt = stmt.where(workflow_runs.c.principal == principal)
        if status:
            stmt = stmt.where(workflow_runs.c.status == status)
        if name:
            stmt = stmt.where(workflow_runs.c.name == name)
        if after_seq is not None:
            stmt = stmt.where(workflow_runs.c.seq < after_seq)
        with self.engine.connect() as conn:
            return [_row(r) for r in conn.execute(stmt)]

    def claim_unfinished_runs(self, owner: str) -> list[dict[str, Any]]:
        """Take the unfinished runs no live replica drives (their replica died, or they have
        no owner) and return them oldest first, with their state. Atomic like the task claim:
        a run owned by a registered replica is never taken."""
        stmt = (
            workflow_runs.update()
            .where(workflow_runs.c.status.in_(["pending", "running"]))
            .where(
                sa.or_(
                    workflow_runs.c.owner.is_(None),
                    workflow_runs.c.owner.not_in(sa.select(replicas.c.id)),
                )
            )
            .values(owner=owner)
            .returning(
                workflow_runs.c.seq,
                workflow_runs.c.id,
                workflow_runs.c.state,
                workflow_runs.c.principal,
            )
        )
        with self.engine.begin() as conn:
            rows = [_row(r) for r in conn.execute(stmt)]
        rows.sort(key=lambda r: r["seq"])
        return rows

    def step_tasks(self, run_id: str) -> list[dict[str, Any]]:
        stmt = (
            sa.select(
                workflow_step_tasks.c.step_id,
                workflow_step_tasks.c.attempt,
                workflow_step_tasks.c.task,
                workflow_step_tasks.c.idempotency_key,
                workflow_step_tasks.c.task_id,
            )
            .where(workflow_step_tasks.c.run_id == run_id)
            .order_by(workflow_step_tasks.c.created_at, workflow_step_tasks.c.attempt)
        )
        with self.engine.connect() as conn:
            return [_row(r) for r in conn.execute(stmt)]

    def events(self, run_id: str, after_seq: int = 0) -> list[dict[str, Any]]:
        stmt = (
            sa.select(
                workflow_events.c.seq,
                workflow_events.c.ts,
                workflow_events.c.kind,
                workflow_events.c.data,
            )
            .where(workflow_events.c.run_id == run_id, workflow_events.c.seq > after_seq)
            .order_by(workflow_events.c.seq)
        )
        with self.engine.connect() as conn:
            return [_row(r) for r in conn.execute(stmt)]

    def callbacks(self, run_id: str) -> list[dict[str, Any]]:
        """The run's callbacks, each with its delivery attempts in order."""
        cb = workflow_callbacks.c
        at = workflow_callback_attempts.c
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(
                    cb.id, cb.event, cb.url, cb.payload, cb.status, cb.attempts, cb.created_at
                )
                .where(cb.run_id == run_id)
                .order_by(cb.seq)
            ).all()
            tries = conn.execute(
                sa.select(
                    at.callback_id, at.attempt, at.status_code, at.error, at.ts, at.duration_s
                )
                .where(at.run_id == run_id)
                .order_by(at.seq)
            ).all()
        by_cb: dict[str, list[dict[str, Any]]] = {}
        for t in tries:
            d = _row(t)
            by_cb.setdefault(d.pop("callback_id"), []).append(d)
        return [{**_row(r), "deliveries": by_cb.get(r.id, [])} for r in rows]

    def pending_callbacks(self, owner: str | None = None) -> list[dict[str, Any]]:
        """Callbacks not yet delivered; with ``owner``, only those of runs it drives or no
        live replica drives (callbacks are delivered at least once)."""
        cb = workflow_callbacks.c
        stmt = (
            sa.select(cb.id, cb.run_id, cb.event, cb.url, cb.payload, cb.attempts)
            .where(cb.status == "pending")
            .order_by(cb.seq)
        )
        if owner is not None:
            runs = workflow_runs.c
            orphaned = sa.or_(
                runs.owner == owner,
                runs.owner.is_(None),
                runs.owner.not_in(sa.select(replicas.c.id)),
            )
            stmt = stmt.where(cb.run_id.in_(sa.select(runs.id).where(orphaned)))
        with self.engine.connect() as conn:
            return [_row(r) for r in conn.execute(stmt)]


def _row(row: Any) -> dict[str, Any]:
    # Column keys are sqlalchemy ``quoted_name`` (a str subclass); orjson wants plain str.
    return {str(k): v for k, v in row._mapping.items()}
