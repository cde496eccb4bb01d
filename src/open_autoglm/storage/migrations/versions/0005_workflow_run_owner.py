"""Workflow runs get an owner: the replica that drives them (taken over when it dies).

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("workflow_runs", sa.Column("owner", sa.String(32)))
    op.create_index("ix_workflow_runs_owner_status", "workflow_runs", ["owner", "status"])


def downgrade() -> None:
    op.drop_index("ix_workflow_runs_owner_status", "workflow_runs")
    op.drop_column("workflow_runs", "owner")
