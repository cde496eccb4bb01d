"""Table definitions (SQLAlchemy Core). Schema changes go through Alembic migrations."""

from __future__ import annotations

from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

__all__ = [
    "JSONText",
    "artifact_owners",
    "artifacts",
    "metadata",
    "models",
    "replicas",
    "results",
    "rulesets",
    "task_events",
    "tasks",
]


class JSONText(TypeDecorator[Any]):
    """JSON stored as text, encoded with orjson (several times faster than json)."""

    impl = sa.Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        if value is None:
            return None
        return orjson.dumps(value).decode()

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        return orjson.loads(value)


metadata = sa.MetaData()

tasks = sa.Table(
    "tasks",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(32), nullable=False, unique=True),
    sa.Column("task_type", sa.String(200), nullable=False),
    sa.Column("model", sa.String(200)),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("priority", sa.Integer, nullable=False),
    sa.Column("spec", JSONText, nullable=False),
    sa.Column("idempotency_key", sa.String(200), unique=True),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("max_retries", sa.Integer, nullable=False, default=0),
    # False for online inference (/v1/infer): logged, but never replayed after a crash.
    sa.Column("durable", sa.Boolean, nullable=False, default=True),
    sa.Column("error", JSONText),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("started_at", sa.Float),
    sa.Column("finished_at", sa.Float),
    # The replica (server process) that runs it; another takes it over when that one's
    # lease lapses. NULL for rows written before replicas existed.
    sa.Column("owner", sa.String(32)),
    # Whose task it is: the owner of the API key that submitted it (NULL without keys).
    sa.Column("principal", sa.String(200)),
    sa.Index("ix_tasks_status_seq", "status", "seq"),
    sa.Index("ix_tasks_type_seq", "task_type", "seq"),
    sa.Index("ix_tasks_owner_status", "owner", "status"),
    # Finds online records past their retention (StorageHub.prune_online).
    sa.Index("ix_tasks_durable_finished", "durable", "finished_at"),
    sa.Index("ix_tasks_principal_seq", "principal", "seq"),
)

# Live server processes sharing the database, each renewing its lease by heartbeat.
replicas = sa.Table(
    "replicas",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("heartbeat_at", sa.Float, nullable=False),
)

task_events = sa.Table(
    "task_events",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("task_id", sa.String(32), nullable=False),
    sa.Column("ts", sa.Float, nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("data", JSONText, nullable=False),
    sa.Index("ix_task_events_task_seq", "task_id", "seq"),
)

results = sa.Table(
    "results",
    metadata,
    sa.Column("task_id", sa.String(32), primary_key=True),
    sa.Column("result", JSONText),
    sa.Column("created_at", sa.Float, nullable=False),
)

models = sa.Table(
    "models",
    metadata,
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("backend", sa.String(32), nullable=False),
    sa.Column("source", JSONText, nullable=False),
    sa.Column("task_types", JSONText, nullable=False),
    sa.Column("config", JSONText, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("principal", sa.String(200)),  # who registered it (an admin key's owner)
    # The owner a training task registered it for (only they and admins see it); NULL: shared.
    sa.Column("private_to", sa.String(200)),
)

artifacts = sa.Table(
    "artifacts",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),  # sha256 hex of the content
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("media_type", sa.String(200), nullable=False),
    sa.Column("name", sa.String(500), nullable=False, default=""),
    sa.Column("task_id", sa.String(32)),
    sa.Column("created_at", sa.Float, nullable=False),
    # Pruning keeps an online task that recorded an artifact: asked once per candidate.
    sa.Index("ix_artifacts_task_id", "task_id"),
)

# Who uploaded an artifact (the same bytes may be uploaded by several owners). An artifact a
# task recorded belongs to the task's owner through ``artifacts.task_id``.
artifact_owners = sa.Table(
    "artifact_owners",
    metadata,
    sa.Column("artifact_id", sa.String(64), primary_key=True),
    sa.Column("principal", sa.String(200), primary_key=True),
)

rulesets = sa.Table(
    "rulesets",
    metadata,
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("source", JSONText, nullable=False),  # the validated ruleset document
    sa.Column("version", sa.Integer, nullable=False),  # 1 on create, +1 on every replace
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)
