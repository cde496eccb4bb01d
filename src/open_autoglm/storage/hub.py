"""StorageHub: the one object the rest of the platform uses to persist and read state.

Writes of task state go through the group-commit :class:`WriteBatcher`; reads use pooled
connections directly. Sessions and connections never leave this module.
"""

from __future__ import annotations

import functools
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from open_autoglm.errors import ConflictError, NotFoundError
from open_autoglm.storage.artifacts import ArtifactFiles
from open_autoglm.storage.engine import create_storage_engine, migrate
from open_autoglm.storage.replicas import ReplicaRegistry
from open_autoglm.storage.tables import (
    artifact_owners,
    artifacts,
    models,
    results,
    rulesets,
    task_events,
    tasks,
)
from open_autoglm.storage.writer import TaskWrite, WriteBatcher

__all__ = ["StorageHub", "TaskWrite"]

_TASK_COLUMNS = (
    tasks.c.seq,
    tasks.c.id,
    tasks.c.task_type,
    tasks.c.model,
    tasks.c.status,
    tasks.c.priority,
    tasks.c.spec,
    tasks.c.idempotency_key,
    tasks.c.attempts,
    tasks.c.max_retries,
    tasks.c.durable,
    tasks.c.error,
    tasks.c.created_at,
    tasks.c.started_at,
    tasks.c.finished_at,
    tasks.c.owner,
    tasks.c.principal,
)


class StorageHub:
    def __init__(self, url: str, data_dir: Path, *, commit_batch: int = 512) -> None:
        self.url = url
        self.engine: Engine = create_storage_engine(url)
        self.files = ArtifactFiles(Path(data_dir) / "artifacts")
        self.writer = WriteBatcher(self.engine, max_batch=commit_batch)
        self.replicas = ReplicaRegistry(self.engine, _TASK_COLUMNS, _row)

    def open(self) -> StorageHub:
        migrate(self.engine)
        self.writer.start()
        return self

    def close(self) -> None:
        self.writer.close()
        self.engine.dispose()

    # -- tasks -------------------------------------------------------------------------------

    def write(self, w: TaskWrite, *, lazy: bool = False) -> Future[Any]:
        """One task write; ``lazy``: a log write no one waits on soon (``storage/writer.py``)."""
        return self.writer.submit(w, lazy=lazy)

    def write_many(self, writes: list[TaskWrite], *, lazy: bool = False) -> Future[list[Any]]:
        """Several task writes in one transaction; the future gives their outcomes in order."""
        return self.writer.submit_many(writes, lazy=lazy)

    def get_task(self, task_id: str) -> dict[str, Any]:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(*_TASK_COLUMNS).where(tasks.c.id == task_id)).first()
        if row is None:
            raise NotFoundError(f"task {task_id} not found")
        return _row(row)

    def find_task_by_key(self, key: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(*_TASK_COLUMNS).where(tasks.c.idempotency_key == key)
            ).first()
        return _row(row) if row else None

    def list_tasks(
        self,
        *,
        status: str | None = None,
        task_type: str | None = None,
        after_seq: int | None = None,
        limit: int = 50,
        principal: str | None = None,
    ) -> list[dict[str, Any]]:
        """Tasks newest first; ``after_seq`` is the cursor (seq of the last row seen); with
        ``principal``, only that owner's tasks."""
        stmt = sa.select(*_TASK_COLUMNS).order_by(tasks.c.seq.desc()).limit(limit)
        if principal is not None:
            stmt = stmt.where(tasks.c.principal == principal)
        if status:
            stmt = stmt.where(tasks.c.status == status)
        if task_type:
            stmt = stmt.where(tasks.c.task_type == task_type)
        if after_seq is not None:
            stmt = stmt.where(tasks.c.seq < after_seq)
        with self.engine.connect() as conn:
            return [_row(r) for r in conn.execute(stmt)]

    def count_by_status(self) -> dict[str, int]:
        stmt = sa.select(tasks.c.status, sa.func.count()).group_by(tasks.c.status)
        with self.engine.connect() as conn:
            return {s: int(n) for s, n in conn.execute(stmt)}

    def get_result(self, task_id: str) -> tuple[bool, Any]:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(results.c.result).where(results.c.task_id == task_id)
            ).first()
        return (False, None) if row is None else (True, row[0])

    def events(self, task_id: str, after_seq: int = 0) -> list[dict[str, Any]]:
        stmt = (
            sa.select(task_events.c.seq, task_events.c.ts, task_events.c.kind, task_events.c.data)
            .where(task_events.c.task_id == task_id, task_events.c.seq > after_seq)
            .order_by(task_events.c.seq)
        )
        with self.engine.connect() as conn:
            return [_row(r) for r in conn.execute(stmt)]

    def prune_online(
        self, before: float, *, chunk: int = 1000, stop: threading.Event | None = None
    ) -> int:
        """Delete online inference records (``durable`` false) that ended before ``before``
        (epoch seconds), with their events and results; returns how many tasks went.

        Durable tasks are never touched, nor an online task that recorded an artifact (the
        artifact keeps naming it). Runs through the writer in transactions of ``chunk``
        tasks, so it never holds the database long or races the writes of the hot path;
        ``stop``, once set, ends it between two of them.
        """
        pruned = 0
        while True:
            n = self.writer.submit(functools.partial(_prune_chunk, before=before, limit=chunk))
            done = int(n.result())
            pruned += done
            if done < chunk or (stop is not None and stop.is_set()):
                return pruned

    # -- artifacts ---------------------------------------------------------------------------

    def put_artifact(
        self,
        data: bytes,
        *,
        media_type: str,
        name: str = "",
        task_id: str | None = None,
        principal: str | None = None,
    ) -> dict[str, Any]:
        sha, size = self.files.put(data)
        return self.record_artifact(
            sha, size, media_type=media_type, name=name, task_id=task_id, principal=principal
        )

    def record_artifact(
        self,
        sha: str,
        size: int,
        *,
        media_type: str,
        name: str = "",
        task_id: str | None = None,
        principal: str | None = None,
    ) -> dict[str, Any]:
        """Record stored bytes; ``principal``: who uploaded them (an artifact a task records
        belongs to the task's owner)."""
        row = {
            "id": sha,
            "size": size,
            "media_type": media_type,
            "name": name,
            "task_id": task_id,
            "created_at": time.time(),
        }
        with self.engine.begin() as conn:
            exists = conn.execute(sa.select(artifacts.c.id).where(artifacts.c.id == sha)).first()
            if exists is None:
                conn.execute(artifacts.insert().values(row))
            if principal is not None:
                owned = sa.select(artifact_owners.c.artifact_id).where(
                    artifact_owners.c.artifact_id == sha, artifact_owners.c.principal == principal
                )
                if conn.execute(owned).first() is None:
                    conn.execute(
                        artifact_owners.insert().values(artifact_id=sha, principal=principal)
                    )
        return {**row, "sha256": sha}

    def get_artifact(self, artifact_id: str, *, principal: str | None = None) -> dict[str, Any]:
        """One artifact's record; with ``principal``, only if that owner may see it (else
        not found, as for an id that does not exist)."""
        self.files.path(artifact_id)  # validates the id before it reaches SQL or the disk
        stmt = sa.select(artifacts).where(artifacts.c.id == artifact_id)
        if principal is not None:
            stmt = stmt.where(_artifact_visible(principal))
        with self.engine.connect() as conn:
            row = conn.execute(stmt).first()
        if row is None:
            raise NotFoundError(f"artifact {artifact_id} not found")
        return {**_row(row), "sha256": artifact_id}

    def read_artifact(self, artifact_id: str) -> bytes:
        self.get_artifact(artifact_id)
        return self.files.get(artifact_id)

    def list_artifacts(
        self, limit: int = 100, *, principal: str | None = None, task_id: str | None = None
    ) -> list[dict[str, Any]]:
        """Artifacts newest first; with ``principal``, only those that owner may see; with
        ``task_id``, only those that task recorded."""
        stmt = sa.select(artifacts).order_by(artifacts.c.created_at.desc()).limit(limit)
        if principal is not None:
            stmt = stmt.where(_artifact_visible(principal))
        if task_id is not None:
            stmt = stmt.where(artifacts.c.task_id == task_id)
        with self.engine.connect() as conn:
            return [_row(r) for r in conn.execute(stmt)]

    # -- model registry ----------------------------------------------------------------------

    def put_model(
        self,
        entry: dict[str, Any],
        *,
        replace: bool = False,
        principal: str | None = None,
        private_to: str | None = None,
    ) -> dict[str, Any]:
        now = time.time()
        with self.engine.begin() as conn:
            found = conn.execute(
                sa.select(models.c.created_at).where(models.c.name == entry["name"])
            ).first()
            if found is not None and not replace:
                raise ConflictError(f"model {entry['name']!r} is already registered")
            row = {
                "name": entry["name"],
                "backend": entry["backend"],
                "source": entry.get("source", {}),
                "task_types": entry.get("task_types", []),
                "config": entry.get("config", {}),
                "updated_at": now,
                "principal": principal,
                "private_to": private_to,
            }
            if found is None:
                conn.execute(models.insert().values(created_at=now, **row))
            else:
                conn.execute(models.update().where(models.c.name == entry["name"]).values(row))
        return self.get_model(entry["name"])

    def get_model(self, name: str) -> dict[str, Any]:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(models).where(models.c.name == name)).first()
        if row is None:
            raise NotFoundError(f"model {name!r} is not registered")
        return _row(row)

    def list_models(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [_row(r) for r in conn.execute(sa.select(models).order_by(models.c.name))]

    def delete_model(self, name: str) -> None:
        with self.engine.begin() as conn:
            n = conn.execute(models.delete().where(models.c.name == name)).rowcount
        if not n:
            raise NotFoundError(f"model {name!r} is not registered")

    # -- rulesets ----------------------------------------------------------------------------

    def put_ruleset(self, name: str, source: dict[str, Any]) -> dict[str, Any]:
        """Create or replace a ruleset (``source`` already validated); the version counts up."""
        now = time.time()
        bump = (
            rulesets.update()
            .where(rulesets.c.name == name)
            .values(source=source, version=rulesets.c.version + 1, updated_at=now)
        )
        for _ in range(2):
            try:
                with self.engine.begin() as conn:
                    if conn.execute(bump).rowcount:
                        break
                    conn.execute(
                        rulesets.insert().values(
                            name=name, source=source, version=1, created_at=now, updated_at=now
                        )
                    )
                    break
            except sa.exc.IntegrityError:
                continue  # a concurrent first PUT won the insert: bump its version instead
        return self.get_ruleset(name)

    def get_ruleset(self, name: str) -> dict[str, Any]:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(rulesets).where(rulesets.c.name == name)).first()
        if row is None:
            raise NotFoundError(f"ruleset {name!r} not found")
        return _row(row)

    def list_rulesets(self) -> list[dict[str, Any]]:
        """Every ruleset without its source (name, version, timestamps), by name."""
        cols = (rulesets.c.name, rulesets.c.version, rulesets.c.created_at, rulesets.c.updated_at)
        with self.engine.connect() as conn:
            return [_row(r) for r in conn.execute(sa.select(*cols).order_by(rulesets.c.name))]

    def delete_ruleset(self, name: str) -> None:
        with self.engine.begin() as conn:
            n = conn.execute(rulesets.delete().where(rulesets.c.name == name)).rowcount
        if not n:
            raise NotFoundError(f"ruleset {name!r} not found")


def _row(row: Any) -> dict[str, Any]:
    # Column keys are sqlalchemy ``quoted_name`` (a str subclass); orjson wants plain str.
    return {str(k): v for k, v in row._mapping.items()}


def _artifact_visible(principal: str) -> sa.ColumnElement[bool]:
    """An artifact ``principal`` uploaded, or one that a task of theirs recorded."""
    uploaded = sa.exists().where(
        artifact_owners.c.artifact_id == artifacts.c.id, artifact_owners.c.principal == principal
    )
    recorded = sa.exists().where(tasks.c.id == artifacts.c.task_id, tasks.c.principal == principal)
    return sa.or_(uploaded, recorded)


def _prune_chunk(conn: Connection, *, before: float, limit: int) -> int:
    """One transaction of :meth:`StorageHub.prune_online`: up to ``limit`` tasks."""
    has_artifact = sa.exists().where(artifacts.c.task_id == tasks.c.id)
    ids = [
        str(r[0])
        for r in conn.execute(
            sa.select(tasks.c.id)
            .where(
                tasks.c.durable == sa.false(),
                tasks.c.finished_at < before,
                ~has_artifact,
            )
            .limit(limit)
        )
    ]
    if ids:
        conn.execute(task_events.delete().where(task_events.c.task_id.in_(ids)))
        conn.execute(results.delete().where(results.c.task_id.in_(ids)))
        conn.execute(tasks.delete().where(tasks.c.id.in_(ids)))
    return len(ids)
