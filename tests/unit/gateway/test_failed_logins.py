"""Failed authentications per address (services/gateway/failed_logins.py), on a fake clock."""

from __future__ import annotations

import pytest

from services.gateway.failed_logins import FailedLogins
from services.gateway.problems import ProblemError


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_address_is_throttled_past_its_burst_and_recovers_at_the_rate() -> None:
    clock = Clock()
    logins = FailedLogins(rate_per_second=0.5, burst=3, clock=clock)
    for _ in range(3):
        logins.check("10.0.0.1")
        logins.failed("10.0.0.1")
    with pytest.raises(ProblemError) as refused:
        logins.check("10.0.0.1")
    assert refused.value.problem.status == 429 and refused.value.problem.code == "AUTHENTICATION_THROTTLED"
    assert refused.value.headers == {"Retry-After": "2"}  # one failure back every 2 s
    logins.check("10.0.0.2")  # another address is not affected
    clock.now += 2.0
    logins.check("10.0.0.1")


def test_the_least_recently_failed_addresses_are_forgotten_past_the_cap() -> None:
    logins = FailedLogins(rate_per_second=0.001, burst=1, max_addresses=2, clock=Clock())
    for address in ("a", "b", "c"):
        logins.failed(address)
    logins.check("a")  # forgotten: a full bucket again
    for address in ("b", "c"):
        with pytest.raises(ProblemError):
            logins.check(address)
