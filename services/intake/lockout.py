"""Lockout: after ``lockout_failures`` failed liveness sessions of one subject key or device id
within ``lockout_window_s``, new sessions for it are refused for ``lockout_cooldown_s``.

The rule is ``domain.limits`` (``LockoutPolicy``, ``lockout_subjects``). The sessions repository
records a failure (``infra.db.security.failure_rows`` of the session's settings) in the
transaction that ends a session, whoever ends it, when the domain rule counts the ending
(``domain.sessions.counts_toward_lockout``: FAILED, erased mid-session included, or EXPIRED after
the subject's camera connected); session creation (:class:`services.intake.sessions.SessionCreator`,
used by HTTP and the broker ingress alike) refuses while any of its subjects is locked. Only
SHA-256 digests scoped by the owning client are stored (``domain.limits.subject_digest``).
"""

from __future__ import annotations

from datetime import UTC, datetime

from contracts.documents import SessionSettingsDocument
from domain.limits import LockoutPolicy, lockout_subjects, retry_after_s
from domain.ports import FailureHistory
from infra.settings import Settings
from services.intake.errors import LockedOut

__all__ = ["refuse_if_locked"]


async def refuse_if_locked(
    failures: FailureHistory | None,
    settings: Settings,
    owner: str,
    session_settings: SessionSettingsDocument,
    now: datetime | None = None,
) -> None:
    """Raise :class:`LockedOut` ``SUBJECT_LOCKED_OUT`` (with the seconds to wait) while a subject
    of ``session_settings`` is locked out."""
    subjects = lockout_subjects(owner, session_settings)
    if failures is None or not subjects:
        return
    now = now or datetime.now(UTC)
    policy = LockoutPolicy(settings.lockout_failures, settings.lockout_window_s, settings.lockout_cooldown_s)
    until = await failures.locked_until(subjects, now, policy)
    if until is None:
        return
    retry_after = retry_after_s(until, now)
    raise LockedOut(
        "SUBJECT_LOCKED_OUT",
        "Subject locked out",
        f"Too many failed liveness sessions for this subject or device; retry in {retry_after} s.",
        retry_after_s=retry_after,
    )
