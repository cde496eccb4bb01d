"""Workflows: runs with their engine state, step tasks, run events, callbacks and attempts.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "workflow_runs",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(32), nullable=False, unique=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("spec", sa.Text, nullable=False),
        sa.Column("inputs", sa.Text, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("callback_secret", sa.String(500)),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.Column("finished_at", sa.Float),
    )
    op.create_index("ix_workflow_runs_status_seq", "workflow_runs", ["status", "seq"])
    op.create_index("ix_workflow_runs_name_seq", "workflow_runs", ["name", "seq"])
    op.create_table(
        "workflow_step_tasks",
        sa.Column("run_id", sa.String(32), primary_key=True),
        sa.Column("step_id", sa.String(500), primary_key=True),
        sa.Column("attempt", sa.Integer, primary_key=True),
        sa.Column("task", sa.Text, nullable=False),
        sa.Column("idempotency_key", sa.String(200), nullable=False),
        sa.Column("task_id", sa.String(32)),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "workflow_events",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(32), nullable=False),
        sa.Column("ts", sa.Float, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("data", sa.Text, nullable=False),
    )
    op.create_index("ix_workflow_events_run_seq", "workflow_events", ["run_id", "seq"])
    op.create_table(
        "workflow_callbacks",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(32), nullable=False, unique=True),
        sa.Column("run_id", sa.String(32), nullable=False),
        sa.Column("event", sa.String(32), nullable=False),
        sa.Column("url", sa.String(2000), nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_index("ix_workflow_callbacks_run", "workflow_callbacks", ["run_id", "seq"])
    op.create_index("ix_workflow_callbacks_status", "workflow_callbacks", ["status"])
    op.create_table(
        "workflow_callback_attempts",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("callback_id", sa.String(32), nullable=False),
        sa.Column("run_id", sa.String(32), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("status_code", sa.Integer),
        sa.Column("error", sa.Text),
        sa.Column("ts", sa.Float, nullable=False),
        sa.Column("duration_s", sa.Float, nullable=False),
    )
    op.create_index(
        "ix_workflow_callback_attempts_run", "workflow_callback_attempts", ["run_id", "seq"]
    )


def downgrade() -> None:
    for table in (
        "workflow_callback_attempts",
        "workflow_callbacks",
        "workflow_events",
        "workflow_step_tasks",
        "workflow_runs",
    ):
        op.drop_table(table)
