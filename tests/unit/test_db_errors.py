"""Which driver errors are retryable: a server shutting down or starting up is, a bad query is not."""

from __future__ import annotations

import pytest
from sqlalchemy import exc as sa_exc

from infra.db.errors import DatabaseError, DatabaseUnavailable, translate_errors


class DriverError(Exception):
    """What SQLAlchemy's asyncpg adapter wraps: the server's SQLSTATE on ``sqlstate``."""

    def __init__(self, sqlstate: str) -> None:
        super().__init__(f"SQLSTATE {sqlstate}")
        self.sqlstate = sqlstate


def translated(sqlstate: str) -> DatabaseError:
    with pytest.raises(DatabaseError) as raised, translate_errors():
        raise sa_exc.DBAPIError("SELECT 1", None, DriverError(sqlstate))
    return raised.value


@pytest.mark.parametrize(
    "sqlstate",
    [
        "57P01",  # admin_shutdown: pg_ctl stop -m fast ended the session
        "57P02",  # crash_shutdown
        "57P03",  # cannot_connect_now: "the database system is starting up" / "shutting down"
        "53300",  # too_many_connections
        "08006",  # connection_failure
        "08001",  # sqlclient_unable_to_establish_sqlconnection
    ],
)
def test_a_server_going_or_coming_back_is_unavailable(sqlstate: str) -> None:
    assert isinstance(translated(sqlstate), DatabaseUnavailable)


@pytest.mark.parametrize("sqlstate", ["42601", "22P02", "XX000", ""])
def test_other_server_errors_are_permanent(sqlstate: str) -> None:
    error = translated(sqlstate)
    assert type(error) is DatabaseError
