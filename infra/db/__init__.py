"""State: SQLAlchemy 2 async engine, tables, Alembic migrations and repositories.

Import the pieces from their modules (``infra.db.engine``, ``infra.db.repositories``, ...);
nothing here does I/O at import time.
"""
