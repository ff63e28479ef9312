"""Paced redelivery: which failures wait before their nack, and how long."""

from __future__ import annotations

import pytest
from aiormq.exceptions import ChannelInvalidStateError

from infra.db.errors import DatabaseError, DatabaseUnavailable
from infra.redelivery import is_retryable, redelivery_delay


def test_the_delay_doubles_per_delivery_up_to_a_cap() -> None:
    assert [redelivery_delay(n) for n in range(6)] == [2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert redelivery_delay(-1) == 2.0
    # the default delivery limit (3) spans a 30 s outage
    assert sum(redelivery_delay(n) for n in range(3 + 1)) == 30.0


class Translated(Exception):
    """What a service raises at its edge for a dependency that is down (a failed publish)."""


def test_a_dependency_down_is_retryable_even_once_translated() -> None:
    assert is_retryable(DatabaseUnavailable("the database system is shutting down"))
    assert is_retryable(ChannelInvalidStateError("channel closed"))
    assert is_retryable(ConnectionResetError())
    try:
        try:
            raise ChannelInvalidStateError("channel closed")
        except ChannelInvalidStateError as error:
            raise Translated("ChannelInvalidStateError") from error
    except Translated as translated:
        assert is_retryable(translated)


@pytest.mark.parametrize("error", [ValueError("bad frame"), DatabaseError("syntax"), KeyError("x")])
def test_other_failures_are_not_paced(error: Exception) -> None:
    assert not is_retryable(error)
