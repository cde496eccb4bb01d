"""Managed API keys, and the owner (an API key's owner) of tasks, runs, models and artifacts.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("owner", sa.String(200), nullable=False),
        sa.Column("scopes", sa.Text, nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("revoked_at", sa.Float),
    )
    # ``principal``, not ``owner``: tasks and runs already have an owner, the replica.
    op.add_column("tasks", sa.Column("principal", sa.String(200)))
    op.create_index("ix_tasks_principal_seq", "tasks", ["principal", "seq"])
    op.add_column("workflow_runs", sa.Column("principal", sa.String(200)))
    op.create_index("ix_workflow_runs_principal_seq", "workflow_runs", ["principal", "seq"])
    op.add_column("models", sa.Column("principal", sa.String(200)))
    op.create_table(
        "artifact_owners",
        sa.Column("artifact_id", sa.String(64), primary_key=True),
        sa.Column("principal", sa.String(200), primary_key=True),
    )


def downgrade() -> None:
    op.drop_table("artifact_owners")
    op.drop_column("models", "principal")
    op.drop_index("ix_workflow_runs_principal_seq", "workflow_runs")
    op.drop_column("workflow_runs", "principal")
    op.drop_index("ix_tasks_principal_seq", "tasks")
    op.drop_column("tasks", "principal")
    op.drop_table("api_keys")
