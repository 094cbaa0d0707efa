"""The certificate store: SQLAlchemy models, Alembic migrations and the queries the service needs."""
