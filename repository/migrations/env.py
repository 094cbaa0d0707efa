"""Alembic environment: runs on the connection that ``repository.migrate`` hands over."""

from alembic import context

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run the migrations with repository.migrate(url), not the alembic CLI")

context.configure(connection=connection, target_metadata=None, transactional_ddl=True)
with context.begin_transaction():
    context.run_migrations()
