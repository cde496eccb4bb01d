"""Indexes for pruning online inference records past their retention.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_tasks_durable_finished", "tasks", ["durable", "finished_at"])
    op.create_index("ix_artifacts_task_id", "artifacts", ["task_id"])


def downgrade() -> None:
    op.drop_index("ix_artifacts_task_id", "artifacts")
    op.drop_index("ix_tasks_durable_finished", "tasks")
