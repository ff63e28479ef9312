"""The limits' rules (domain/limits.py) over a fake clock: the token bucket's refill and burst, the
monthly quota at the month's end, the lockout's window and its end. Pure: no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

from contracts.documents import SessionSettingsDocument
from domain.limits import (
    QUOTA_EXCEEDED,
    RATE_LIMITED,
    Bucket,
    Limits,
    LockoutPolicy,
    decide,
    lockout_subjects,
    month_period,
    next_month,
    refill,
    take_token,
)

T0 = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


@dataclass
class FakeClock:
    at: datetime = T0

    def now(self) -> datetime:
        return self.at

    def advance(self, seconds: float) -> datetime:
        self.at += timedelta(seconds=seconds)
        return self.at


@dataclass
class Client:
    """One client's bucket as the database keeps it, charged through the rules alone."""

    limits: Limits
    clock: FakeClock
    tokens: float = -1.0
    updated_at: datetime = T0
    used: int = 0

    def request(self) -> str | None:
        now = self.clock.now()
        if self.tokens < 0:  # a new bucket starts full
            self.tokens, self.updated_at = float(self.limits.burst), now
        bucket = take_token(self.tokens, self.updated_at, self.limits, now)
        self.tokens, self.updated_at = bucket.tokens, bucket.updated_at
        used = None
        quota = self.limits.monthly_quota
        if bucket.allowed and quota is not None and self.used < quota:
            self.used += 1
            used = self.used
        return decide(bucket, self.limits, now, quota_used=used).code


def test_refill_is_capped_at_the_burst() -> None:
    limits = Limits(rate_per_second=2.0, burst=10, monthly_quota=None)
    assert refill(0.0, 1.5, limits) == 3.0
    assert refill(9.0, 60.0, limits) == 10.0
    assert refill(4.0, -5.0, limits) == 4.0  # a clock step back adds nothing


def test_a_burst_then_the_steady_rate() -> None:
    clock = FakeClock()
    client = Client(Limits(rate_per_second=2.0, burst=5, monthly_quota=None), clock)
    assert [client.request() for _ in range(6)] == [None] * 5 + [RATE_LIMITED]
    clock.advance(0.5)  # one token back at 2/s
    assert [client.request(), client.request()] == [None, RATE_LIMITED]
    clock.advance(3600)  # a long pause refills to the burst, not beyond
    assert [client.request() for _ in range(6)] == [None] * 5 + [RATE_LIMITED]


def test_a_refusal_says_when_to_retry_and_when_the_bucket_is_full() -> None:
    limits = Limits(rate_per_second=0.5, burst=4, monthly_quota=None)
    refused = decide(Bucket(tokens=0.25, updated_at=T0, allowed=False), limits, T0)
    assert (refused.allowed, refused.code, refused.remaining) == (False, RATE_LIMITED, 0)
    assert refused.retry_after_s == 2  # 0.75 token at 0.5/s: 1.5 s, rounded up
    assert refused.reset_s == 8  # 3.75 tokens to full: 7.5 s, rounded up
    allowed = decide(Bucket(tokens=2.6, updated_at=T0, allowed=True), limits, T0)
    assert (allowed.allowed, allowed.remaining, allowed.retry_after_s) == (True, 2, 0)


def test_a_clock_behind_the_bucket_neither_refills_nor_moves_it_back() -> None:
    limits = Limits(rate_per_second=1.0, burst=3, monthly_quota=None)
    bucket = take_token(1.0, T0, limits, T0 - timedelta(seconds=30))
    assert bucket == Bucket(tokens=0.0, updated_at=T0, allowed=True)


def test_the_quota_runs_out_and_renews_on_the_first_of_the_month() -> None:
    clock = FakeClock(datetime(2026, 12, 31, 23, 59, 58, tzinfo=UTC))
    client = Client(Limits(rate_per_second=100.0, burst=100, monthly_quota=2), clock)
    assert [client.request(), client.request()] == [None, None]
    now = clock.now()
    exceeded = decide(take_token(client.tokens, client.updated_at, client.limits, now), client.limits, now)
    assert exceeded.code == QUOTA_EXCEEDED and exceeded.quota_remaining == 0
    assert exceeded.retry_after_s == 2  # until 2027-01-01 00:00 UTC
    clock.advance(2)
    assert month_period(clock.now()) == "2027-01" != month_period(now) == "2026-12"
    client.used = 0  # the new month's count (the database keys it by the period)
    assert client.request() is None


def test_the_quota_says_what_is_left() -> None:
    limits = Limits(rate_per_second=1.0, burst=10, monthly_quota=1000)
    decision = decide(Bucket(tokens=5.0, updated_at=T0, allowed=True), limits, T0, quota_used=990)
    assert (decision.quota, decision.quota_remaining) == (1000, 10)


def test_the_month_is_utc() -> None:
    berlin_new_year = datetime(2027, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=1)))
    assert month_period(berlin_new_year) == "2026-12"  # still December in UTC
    assert month_period(datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC)) == "2026-12"
    assert next_month(datetime(2026, 12, 31, 23, 59, tzinfo=UTC)) == datetime(2027, 1, 1, tzinfo=UTC)
    assert next_month(datetime(2026, 2, 1, 0, 0, tzinfo=UTC)) == datetime(2026, 3, 1, tzinfo=UTC)


POLICY = LockoutPolicy(failures=5, window_s=180, cooldown_s=1800)


def test_lockout_needs_the_failures_within_the_window() -> None:
    spread = [T0 + timedelta(seconds=60 * i) for i in range(5)]  # 5 failures in 4 minutes
    assert POLICY.end(spread) is None
    close = [T0 + timedelta(seconds=30 * i) for i in range(5)]  # 5 failures in 2 minutes
    assert POLICY.end(close) == close[-1] + timedelta(seconds=1800)
    assert POLICY.end(close[:4]) is None  # four are not enough


def test_lockout_ends_after_the_cooldown() -> None:
    clock = FakeClock()
    failures = [("user-7", clock.advance(10)) for _ in range(5)]  # T0+10 .. T0+50
    last = failures[-1][1]
    assert POLICY.locked_until(failures, clock.now()) == last + timedelta(seconds=1800)
    clock.at = last + timedelta(seconds=1799)
    assert POLICY.locked_until(failures, clock.now()) == last + timedelta(seconds=1800)
    clock.at = last + timedelta(seconds=1800)
    assert POLICY.locked_until(failures, clock.now()) is None  # the cool-down is over
    # failures older than the window plus the cool-down can no longer lock anything
    assert POLICY.since(clock.now()) == clock.now() - timedelta(seconds=1980)


def test_lockout_is_per_subject_and_the_latest_end_wins() -> None:
    a = [("a", T0 + timedelta(seconds=i)) for i in range(5)]
    b = [("b", T0 + timedelta(seconds=100 + i)) for i in range(5)]
    mixed = [("c", T0 + timedelta(seconds=i)) for i in range(3)] + [
        ("d", T0 + timedelta(seconds=i)) for i in range(3)
    ]
    now = T0 + timedelta(seconds=200)
    assert POLICY.locked_until(list(reversed(a + b)), now) == T0 + timedelta(seconds=104 + 1800)
    assert POLICY.locked_until(mixed, now) is None  # three each: neither subject is locked
    assert POLICY.locked_until([], now) is None


def test_lockout_subjects_are_scoped_digests() -> None:
    mine = lockout_subjects("client-a", SessionSettingsDocument(subject_key="user-42", device_id="phone-1"))
    # A legacy call-flow session's camelCase settings row counts the same subject.
    theirs = lockout_subjects("client-b", SessionSettingsDocument.from_row({"subjectKey": "user-42"}))
    assert len(mine) == 2 and len(theirs) == 1
    assert theirs[0] not in mine
    assert all("user-42" not in digest and len(digest) == 64 for digest in mine)
    assert lockout_subjects("client-a", SessionSettingsDocument()) == []
