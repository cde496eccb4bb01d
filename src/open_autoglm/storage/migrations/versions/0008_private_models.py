"""Models a training task registers are private to the task's owner (NULL: shared).

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("models", sa.Column("private_to", sa.String(200)))


def downgrade() -> None:
    op.drop_column("models", "private_to")
