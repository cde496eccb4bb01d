"""Replicas and task ownership: several servers on one database each run their own tasks.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "replicas",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("started_at", sa.Float, nullable=False),
        sa.Column("heartbeat_at", sa.Float, nullable=False),
    )
    op.add_column("tasks", sa.Column("owner", sa.String(32)))
    op.create_index("ix_tasks_owner_status", "tasks", ["owner", "status"])


def downgrade() -> None:
    op.drop_index("ix_tasks_owner_status", "tasks")
    op.drop_column("tasks", "owner")
    op.drop_table("replicas")
