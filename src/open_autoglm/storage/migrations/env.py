"""Alembic environment: runs against the connection handed in by ``storage.engine``."""

from __future__ import annotations

from alembic import context

from open_autoglm.storage.tables import metadata

config = context.config
connection = config.attributes.get("connection")

if connection is None:
    raise RuntimeError("run migrations through open_autoglm.storage.engine.migrate()")

context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
