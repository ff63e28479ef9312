"""Limits on clients and subjects: the token bucket, the monthly quota and the liveness lockout,
as pure rules over a clock (each takes ``now``; no I/O).

* **Token bucket**: a client's bucket holds up to ``burst`` tokens and refills at
  ``rate_per_second``; a request takes one token (:func:`take_token`), or is refused
  ``RATE_LIMITED`` when less than one is left.
* **Monthly quota**: an allowed request is counted against the client's ``monthly_quota`` for the
  UTC month (:func:`month_period`); past it, requests are refused ``QUOTA_EXCEEDED`` until the 1st
  of the next month (:func:`next_month`). :func:`decide` turns the bucket and the count into the
  answer (``RateDecision``).
* **Lockout**: ``failures`` failed liveness sessions of one subject key or device id within
  ``window_s`` of each other lock it until ``cooldown_s`` after the last of them
  (:class:`LockoutPolicy`); the subjects are SHA-256 digests scoped by the owning client
  (:func:`lockout_subjects`), so the identifier is never stored and one client cannot lock out
  another's subjects. Which endings count: ``domain.sessions.counts_toward_lockout``.

``infra.db.security`` only persists what these rules decide: the bucket under a row lock with a
compare-and-set, the month's count with a conditional upsert that never counts past the quota,
and the failures' times.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from contracts.documents import SessionSettingsDocument

__all__ = [
    "QUOTA_EXCEEDED",
    "RATE_LIMITED",
    "Bucket",
    "Limits",
    "LockoutPolicy",
    "RateDecision",
    "decide",
    "lockout_subjects",
    "month_period",
    "next_month",
    "refill",
    "retry_after_s",
    "subject_digest",
    "take_token",
]

RATE_LIMITED: Final = "RATE_LIMITED"
QUOTA_EXCEEDED: Final = "QUOTA_EXCEEDED"


# -- the token bucket and the monthly quota ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class Limits:
    """A client's steady rate (requests/s), burst (bucket size) and monthly quota (0: none allowed;
    ``None``: not counted, as for the per-session buckets)."""

    rate_per_second: float
    burst: int
    monthly_quota: int | None


@dataclass(frozen=True, slots=True)
class RateDecision:
    allowed: bool
    #: Why refused: ``RATE_LIMITED`` or ``QUOTA_EXCEEDED``; ``None`` when allowed.
    code: str | None
    limit: int
    remaining: int
    #: Seconds until the bucket is full again.
    reset_s: int
    #: Seconds to wait before retrying (refusals only).
    retry_after_s: int
    quota: int | None = None
    quota_remaining: int | None = None


@dataclass(frozen=True, slots=True)
class Bucket:
    """A bucket after one request: the tokens left, the time they are counted from, and whether
    the request got a token."""

    tokens: float
    updated_at: datetime
    allowed: bool


def refill(tokens: float, elapsed_s: float, limits: Limits) -> float:
    """The bucket's tokens after ``elapsed_s`` seconds at the steady rate, capped at the burst (a
    clock that steps back adds nothing)."""
    return min(float(limits.burst), tokens + max(0.0, elapsed_s) * limits.rate_per_second)


def take_token(tokens: float, updated_at: datetime, limits: Limits, now: datetime) -> Bucket:
    """One request against a bucket that held ``tokens`` at ``updated_at``: refilled up to ``now``,
    one token taken if there is one. The bucket's time never goes back (a replica whose clock is
    behind does not refill it twice)."""
    level = refill(tokens, (now - updated_at).total_seconds(), limits)
    allowed = level >= 1.0
    return Bucket(tokens=level - 1.0 if allowed else level, updated_at=max(now, updated_at), allowed=allowed)


def month_period(now: datetime) -> str:
    """The quota's period of ``now``: its UTC month, ``YYYY-MM``."""
    return now.astimezone(UTC).strftime("%Y-%m")


def next_month(now: datetime) -> datetime:
    """When the quota of ``now``'s period renews: the 1st of the next UTC month, 00:00."""
    now = now.astimezone(UTC)
    year, month = (now.year + 1, 1) if now.month == 12 else (now.year, now.month + 1)
    return datetime(year, month, 1, tzinfo=UTC)


def retry_after_s(until: datetime, now: datetime) -> int:
    """Whole seconds to wait from ``now`` until ``until``, at least 1."""
    return max(1, math.ceil((until - now).total_seconds()))


def decide(bucket: Bucket, limits: Limits, now: datetime, *, quota_used: int | None = None) -> RateDecision:
    """The answer to one request. ``quota_used``: the month's count including this request, or
    ``None`` when it was not counted because the quota is used up (only asked when the bucket
    allowed the request and the client has a quota)."""
    rate, left = limits.rate_per_second, bucket.tokens
    reset_s = math.ceil((limits.burst - left) / rate)
    if not bucket.allowed:
        retry = max(1, math.ceil((1.0 - left) / rate))
        return RateDecision(
            False, RATE_LIMITED, limits.burst, remaining=0, reset_s=reset_s, retry_after_s=retry
        )
    quota = limits.monthly_quota
    if quota is not None and quota_used is None:
        return RateDecision(
            False,
            QUOTA_EXCEEDED,
            limits.burst,
            remaining=math.floor(left),
            reset_s=reset_s,
            retry_after_s=retry_after_s(next_month(now), now),
            quota=quota,
            quota_remaining=0,
        )
    return RateDecision(
        True,
        None,
        limits.burst,
        remaining=math.floor(left),
        reset_s=reset_s,
        retry_after_s=0,
        quota=quota,
        quota_remaining=None if quota is None or quota_used is None else max(0, quota - quota_used),
    )


# -- the lockout -------------------------------------------------------------------------------


def subject_digest(owner: str, kind: str, value: str) -> str:
    """What is stored for a subject key or device id: a SHA-256 scoped by the owning client, so the
    identifier itself is never kept and one client cannot lock out another's subjects."""
    return hashlib.sha256(f"{owner}\x00{kind}\x00{value}".encode()).hexdigest()


def lockout_subjects(owner: str, settings: SessionSettingsDocument) -> list[str]:
    """The digests a session's failure counts against (its subject key and device id, if any)."""
    subjects = []
    for kind, value in (("subject", settings.subject_key), ("device", settings.device_id)):
        if value:
            subjects.append(subject_digest(owner, kind, value))
    return subjects


@dataclass(frozen=True, slots=True)
class LockoutPolicy:
    """``failures`` failures of one subject within ``window_s`` of each other lock it until
    ``cooldown_s`` after the last of them."""

    failures: int
    window_s: float
    cooldown_s: float

    def since(self, now: datetime) -> datetime:
        """The oldest failure that can still lock anything at ``now``."""
        return now - timedelta(seconds=self.window_s + self.cooldown_s)

    def end(self, stamps: Sequence[datetime]) -> datetime | None:
        """The latest lockout end over one subject's sorted failure times (None: never locked)."""
        end: datetime | None = None
        window = timedelta(seconds=self.window_s)
        for index in range(self.failures - 1, len(stamps)):
            if stamps[index] - stamps[index - self.failures + 1] <= window:
                candidate = stamps[index] + timedelta(seconds=self.cooldown_s)
                end = candidate if end is None or candidate > end else end
        return end

    def locked_until(self, failures: Iterable[tuple[str, datetime]], now: datetime) -> datetime | None:
        """When the last lockout in force at ``now`` ends, over ``(subject, failed_at)`` pairs
        (any order); ``None`` when no subject is locked."""
        times: dict[str, list[datetime]] = {}
        for subject, failed_at in failures:
            times.setdefault(subject, []).append(failed_at)
        ends = [end for stamps in times.values() if (end := self.end(sorted(stamps))) and end > now]
        return max(ends) if ends else None
