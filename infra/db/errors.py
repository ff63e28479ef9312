"""Database errors, translated from SQLAlchemy and the drivers at the adapter edge.

``DatabaseUnavailable`` is retryable (nack, retry later); every other ``DatabaseError`` is permanent.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import exc as sa_exc

__all__ = [
    "AlreadyExists",
    "DatabaseError",
    "DatabaseUnavailable",
    "NotFound",
    "VersionConflict",
    "translate_errors",
]


class DatabaseError(Exception):
    """Base class of every database error we raise. Permanent unless a subclass says otherwise."""


class DatabaseUnavailable(DatabaseError):
    """The database cannot be reached or is too busy right now. Retryable."""


class AlreadyExists(DatabaseError):
    """A row with the same unique key already exists."""


class NotFound(DatabaseError):
    """The row to change does not exist."""


class VersionConflict(DatabaseError):
    """Optimistic concurrency: the row changed since it was read. Re-read and decide again."""


_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,  # includes ConnectionError; asyncpg raises these raw when it cannot connect
    TimeoutError,
    sa_exc.OperationalError,  # SQLite "database is locked", lost connections
    sa_exc.InterfaceError,
    sa_exc.DisconnectionError,
    sa_exc.TimeoutError,  # connection pool exhausted
)

#: SQLSTATEs of a server that is going away, coming back or full: class 08 (connection exceptions),
#: admin_shutdown (``pg_ctl stop -m fast`` ends every session with it), crash_shutdown,
#: cannot_connect_now ("the database system is starting up / shutting down"), too_many_connections.
_UNAVAILABLE_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "53300"})


@contextmanager
def translate_errors() -> Iterator[None]:
    """Re-raise SQLAlchemy and driver errors as our own; ours pass through untouched."""
    try:
        yield
    except DatabaseError:
        raise
    except _UNAVAILABLE as exc:
        raise DatabaseUnavailable(_describe(exc)) from exc
    except sa_exc.DBAPIError as exc:
        if exc.connection_invalidated or _server_unavailable(exc):
            raise DatabaseUnavailable(_describe(exc)) from exc
        raise DatabaseError(_describe(exc)) from exc
    except sa_exc.SQLAlchemyError as exc:
        raise DatabaseError(_describe(exc)) from exc


def _server_unavailable(exc: sa_exc.DBAPIError) -> bool:
    sqlstate = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    return isinstance(sqlstate, str) and (sqlstate.startswith("08") or sqlstate in _UNAVAILABLE_SQLSTATES)


def _describe(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    source = orig if isinstance(orig, BaseException) else exc
    return f"{type(source).__name__}: {source}".strip()
