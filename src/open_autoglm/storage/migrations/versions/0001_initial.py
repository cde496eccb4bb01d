"""Initial schema: tasks, task events, results, models, artifacts.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tasks",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(32), nullable=False, unique=True),
        sa.Column("task_type", sa.String(200), nullable=False),
        sa.Column("model", sa.String(200)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("priority", sa.Integer, nullable=False),
        sa.Column("spec", sa.Text, nullable=False),
        sa.Column("idempotency_key", sa.String(200), unique=True),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("max_retries", sa.Integer, nullable=False),
        sa.Column("durable", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("error", sa.Text),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("started_at", sa.Float),
        sa.Column("finished_at", sa.Float),
    )
    op.create_index("ix_tasks_status_seq", "tasks", ["status", "seq"])
    op.create_index("ix_tasks_type_seq", "tasks", ["task_type", "seq"])
    op.create_table(
        "task_events",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("task_id", sa.String(32), nullable=False),
        sa.Column("ts", sa.Float, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("data", sa.Text, nullable=False),
    )
    op.create_index("ix_task_events_task_seq", "task_events", ["task_id", "seq"])
    op.create_table(
        "results",
        sa.Column("task_id", sa.String(32), primary_key=True),
        sa.Column("result", sa.Text),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "models",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("backend", sa.String(32), nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("task_types", sa.Text, nullable=False),
        sa.Column("config", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_table(
        "artifacts",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("media_type", sa.String(200), nullable=False),
        sa.Column("name", sa.String(500), nullable=False),
        sa.Column("task_id", sa.String(32)),
        sa.Column("created_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    for name in ("artifacts", "models", "results", "task_events", "tasks"):
        op.drop_table(name)
