"""The liveness worker's handlers: plain async functions, a typed message and :class:`Deps` in.

Delivery rules (see docs/liveness.md, "The liveness worker"):

* A replay step (:func:`advance`) reads the session's state and only the frames stored since its
  last step (each frame is read and judged once: a step costs the same in a long session as in
  a short one), copies the reference and audit images when it decides, all without any lock,
  and then writes its result in one version-checked update. When another step (or a reconnect)
  moved the state on meanwhile, nothing is written and the step starts again from the new state.
  The frame a FrameCaptured brings is judged from memory by its own step and stored in that
  step's write (one transaction per frame, not two); a frame its step does not judge (behind the
  replay, stored already), one before a step that writes nothing or decides, and one whose step
  starts again, is stored on its own first and read back like the others.

* The events a step announces (ReadinessChecked, ChallengeIssued, ChallengeVerdict, then
  LivenessDecided and the MatchReferences command) are written to the outbox in the transaction
  of that version-checked update, in the order a client must see them (infra/db/liveness.py,
  ``save_step``): they commit with the step or not at all, so a broker that is down at commit
  time delays them and a re-delivered message finds them written already (the state row counts
  the ChallengeIssued / ChallengeVerdict events written). The worker's relay publishes them in
  that order (infra/outbox.py), woken by the commit itself (``infra.db.outbox.stage``). A reconnect's
  repeated ChallengeIssued is written with the new connection the same way.
* A session ends once, through ``infra.lifecycle.SessionLifecycle`` (the rule is
  ``domain.sessions.end_session``): a version-checked update that writes SessionFinished to the
  outbox in the same transaction (the worker's relay publishes it: infra/outbox.py).
"""

from __future__ import annotations

import contextlib
import logging
import random
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Final, Protocol

import numpy as np

from contracts.commands import ExpireSession, MatchReferences
from contracts.documents import (
    ChallengeResult,
    LivenessDecisionDocument,
    SessionSettingsDocument,
    StoredChallenge,
)
from contracts.envelope import utc_now
from contracts.events import (
    ChallengeIssued,
    ChallengeVerdict,
    FrameCaptured,
    LivenessDecided,
    ReadinessChecked,
    ReferencesMatched,
    SessionStarted,
)
from contracts.routing import CommandKey, EventKey
from contracts.values import ImageData, SessionStatus
from domain.outgoing import Outgoing
from domain.records import SessionRecord
from domain.sessions import Decided, Expired, Outcome
from infra.db.errors import VersionConflict
from infra.db.liveness import LivenessFrame, LivenessRepository, LivenessState
from infra.db.repositories import SessionRepository
from infra.lifecycle import SessionLifecycle
from infra.storage import ObjectNotFound, ObjectStore
from infra.sweeps import each
from infra.telemetry.metrics import session_status
from services.liveness.analysis import FrameAnalysis
from services.liveness.challenges import (
    DEFAULT_THRESHOLDS,
    MAX_CHALLENGES,
    MIN_CHALLENGES,
    Challenge,
    ChallengeStatus,
    Thresholds,
    draw_challenges,
    judges_eyes,
)
from services.liveness.frames import AnalysedFrame, InvalidFrame
from services.liveness.progress import ReplayProgress
from services.liveness.readiness import DEFAULT_READINESS, Readiness
from services.liveness.replay import (
    ReplayFrame,
    ReplayResult,
    audit_sequences,
    reference_pick,
    replay_step,
)

__all__ = [
    "EXPIRY_SWEEPER",
    "Deps",
    "FrameSource",
    "advance",
    "audit_image_count",
    "finish",
    "handle_expire",
    "handle_frame",
    "handle_references_matched",
    "handle_session_started",
    "session_challenges",
    "session_readiness",
    "sweep",
    "to_replay_frame",
]

log = logging.getLogger("faceproof.liveness")

#: The expiry sweep's name in logs and in ``faceproof_sweep_failures_total``.
EXPIRY_SWEEPER: Final = "expiry"
DEFAULT_CHALLENGE_COUNT: Final = 3
DEFAULT_AUDIT_IMAGES: Final = 2
MAX_AUDIT_IMAGES: Final = 4


class FrameSource(Protocol):
    """Analyses a frame's JPEG (off the event loop); raises InvalidFrame for undecodable bytes.
    ``eyes=False``: without the iris model (the session judges no BLINK)."""

    async def analyse(
        self, session_id: str, sequence: int, jpeg: bytes, *, eyes: bool = True
    ) -> AnalysedFrame: ...

    def forget(self, session_id: str) -> None: ...


@dataclass(frozen=True)
class Deps:
    sessions: SessionRepository
    states: LivenessRepository
    store: ObjectStore
    frames: FrameSource
    identity_threshold: float
    thresholds: Thresholds = DEFAULT_THRESHOLDS
    #: The pre-checks before the first challenge (services/liveness/readiness.py).
    readiness: Readiness = DEFAULT_READINESS
    #: None: the operating system's cryptographic source (tests may seed it).
    rng: random.Random | None = field(default=None, repr=False)


# -- session settings -------------------------------------------------------------------------


def session_challenges(
    settings: SessionSettingsDocument, rng: random.Random | None = None
) -> list[Challenge]:
    """Draw the session's challenges from its settings (``challenges``, ``challenge_types``)."""
    allowed = list(settings.challenge_types) if settings.challenge_types else None
    count = DEFAULT_CHALLENGE_COUNT if settings.challenges is None else settings.challenges
    count = min(max(count, MIN_CHALLENGES), MAX_CHALLENGES, len(allowed) if allowed else MAX_CHALLENGES)
    return draw_challenges(count, allowed, rng if rng is not None else secrets.SystemRandom())


def session_readiness(settings: SessionSettingsDocument, base: Readiness = DEFAULT_READINESS) -> Readiness:
    """The pre-checks of a session: ``base`` with the session's ``ready_timeout_s``, if it set one."""
    limit = settings.ready_timeout_s
    return base if limit is None else replace(base, limit_s=float(limit))


def audit_image_count(settings: SessionSettingsDocument) -> int:
    count = DEFAULT_AUDIT_IMAGES if settings.audit_images is None else settings.audit_images
    return min(max(count, 0), MAX_AUDIT_IMAGES)


# -- messages ---------------------------------------------------------------------------------


def _issued(
    session_id: str, index: int, challenges: Sequence[Challenge], thresholds: Thresholds
) -> ChallengeIssued:
    challenge = challenges[index]
    return ChallengeIssued(
        correlation_id=session_id,
        session_id=session_id,
        index=index,
        count=len(challenges),
        challenge=challenge.type,
        deadline_ms=round(thresholds.time_limit_s * 1000),
        target=challenge.target,
    )


def to_replay_frame(frame: LivenessFrame, started_at: datetime) -> ReplayFrame:
    return ReplayFrame(
        sequence=frame.sequence,
        t=(frame.captured_at - started_at).total_seconds(),
        analysis=FrameAnalysis.from_dict(frame.analysis),
        storage_key=frame.storage_key,
        spoof_score=frame.spoof_score,
        embedding=None if frame.embedding is None else np.asarray(frame.embedding, dtype=np.float32),
        shown=frame.shown,
        media_lead_s=frame.media_lead_s,
    )


async def _copy(store: ObjectStore, source: str, target: str) -> str | None:
    try:
        data = await store.get(source)
    except ObjectNotFound:
        log.warning("frame %s is gone; %s not written", source, target)
        return None
    await store.put(target, data, "image/jpeg")
    return target


async def _keep_images(
    deps: Deps, session_id: str, progress: ReplayProgress, audit: int
) -> tuple[str | None, list[str]]:
    """Copy the reference frame and the audit frames next to the session's other objects."""
    reference = reference_pick(progress)
    reference_key = None
    if reference is not None:
        reference_key = await _copy(deps.store, reference.storage_key, f"sessions/{session_id}/reference.jpg")
    sequences = audit_sequences(progress, audit)
    sources = await deps.states.storage_keys(session_id, sequences)
    audit_keys = []
    for index, sequence in enumerate(sequences):
        source = sources.get(sequence)
        key = None
        if source is not None:
            key = await _copy(deps.store, source, f"sessions/{session_id}/audit-{index}.jpg")
        if key is not None:
            audit_keys.append(key)
    return reference_key, audit_keys


# -- the replay step --------------------------------------------------------------------------

#: Steps started again after a version conflict before the message is retried.
STEP_ATTEMPTS: Final = 5


@dataclass(frozen=True)
class _Decided:
    """What a decision stores (the document) and sends (LivenessDecided, maybe MatchReferences)."""

    document: LivenessDecisionDocument
    event: LivenessDecided
    match: MatchReferences | None


async def advance(
    deps: Deps,
    session_id: str,
    *,
    record: SessionRecord | None = None,
    state: LivenessState | None = None,
    frame: LivenessFrame | None = None,
) -> ReplayResult | None:
    """One replay step (see the module docstring); publish what is new.

    ``record``, ``state``: the session and its liveness state as the caller just read them (its
    first attempt does not read them again; the step's write checks that the session is still
    unfinished and the state still at that version, and a retry reads both afresh).
    ``frame``: a frame just analysed and not stored yet (handle_frame's): the first attempt judges
    it from memory and stores it in its write's transaction; otherwise, and before any retry, it
    is stored on its own (:func:`_store`) and read back like any other.
    Returns the step's replay (None when the session has no state, is decided or finished).
    """
    for _ in range(STEP_ATTEMPTS):
        try:
            return await _step(deps, session_id, record, state, frame)
        except VersionConflict:
            record, state = None, None
            if frame is not None:
                await _store(deps, frame)
                frame = None
            continue  # another step moved the state on: start again from it
    raise VersionConflict(f"the liveness state of session {session_id} kept changing")


async def _store(deps: Deps, frame: LivenessFrame) -> None:
    """Store an analysed frame on its own (once per sequence: the first stored wins)."""
    await deps.states.add_frame(frame)


async def _step(
    deps: Deps,
    session_id: str,
    record: SessionRecord | None,
    state: LivenessState | None,
    pending: LivenessFrame | None,
) -> ReplayResult | None:
    loaded = await _load(deps, session_id, record, state)
    if loaded is None:
        if pending is not None:
            await _store(deps, pending)
        return None
    record, state = loaded
    before = ReplayProgress.load(state.progress)
    stored = await deps.states.frames_from(state.session_id, before.next_sequence)
    if pending is not None and (
        pending.sequence < before.next_sequence or any(f.sequence == pending.sequence for f in stored)
    ):
        await _store(deps, pending)  # not this step's to judge (behind the replay, or stored already)
        pending = None
    frames = stored if pending is None else sorted([*stored, pending], key=lambda f: f.sequence)
    result = _replay(deps, record, state, before, frames)
    if _unchanged(state, before, result):
        if pending is not None:
            await _store(deps, pending)  # kept for a later step (waiting for a gap before it)
        return result
    if result.decision is not None and pending is not None:
        await _store(deps, pending)  # the decision's images are copied from stored frames
        pending = None
    decided = None if result.decision is None else await _decide(deps, record, result)
    messages = _step_messages(state, result, decided, deps.thresholds)
    try:
        await deps.states.save_step(
            state,
            issued=len(result.issued),
            verdicts=len(result.verdicts),
            progress=result.progress.dump(),
            decision=None if decided is None else decided.document,
            match_request_id=None if decided is None or decided.match is None else decided.match.message_id,
            messages=messages,
            frame=pending,
        )
    except VersionConflict:
        if decided is not None:
            await _restore_images(deps, record)
        raise
    if decided is not None:
        event = decided.event
        log.info("session %s decided: live=%s reasons=%s", record.id, event.is_live, event.reasons)
        if decided.match is None:
            await finish(deps, record.id)
    return result


async def _load(
    deps: Deps, session_id: str, record: SessionRecord | None = None, state: LivenessState | None = None
) -> tuple[SessionRecord, LivenessState] | None:
    """The session (``record``, or read) and its state (``state``, or read), or None when there
    is nothing to replay."""
    record = record or await deps.sessions.fetch(session_id)
    if record is None or record.status.terminal or record.purged_at is not None:
        return None
    state = state or await deps.states.get(session_id)
    if state is None or state.decision is not None:
        return None
    return record, state


def _replay(
    deps: Deps,
    record: SessionRecord,
    state: LivenessState,
    progress: ReplayProgress,
    frames: Sequence[LivenessFrame],
) -> ReplayResult:
    """Resume the replay from the stored progress with the frames since (each judged once)."""
    return replay_step(
        [Challenge(c.type, c.target) for c in state.challenges],
        progress,
        [to_replay_frame(f, state.started_at) for f in frames],
        identity_threshold=deps.identity_threshold,
        thresholds=deps.thresholds,
        readiness=session_readiness(record.settings, deps.readiness),
    )


def _unchanged(state: LivenessState, before: ReplayProgress, result: ReplayResult) -> bool:
    """Nothing to write: no frame used, nothing new to publish (a frame waiting for a gap)."""
    return (
        result.decision is None
        and len(result.issued) <= state.issued
        and len(result.verdicts) <= state.verdicts
        and result.progress == before
    )


async def _decide(deps: Deps, record: SessionRecord, result: ReplayResult) -> _Decided:
    """Keep the images (before the write, outside any transaction) and build what is stored and sent."""
    decision = result.decision
    assert decision is not None
    reference_key, audit_keys = await _keep_images(
        deps, record.id, result.progress, audit_image_count(record.settings)
    )
    document = LivenessDecisionDocument(
        is_live=decision.is_live,
        confidence=decision.confidence,
        reasons=list(decision.reasons),
        reference_image_key=reference_key,
        audit_image_keys=audit_keys,
        challenges=[
            ChallengeResult(type=o.challenge.type, status=o.status.value, reason=o.reason)
            for o in result.outcomes
        ],
    )
    event = LivenessDecided(
        correlation_id=record.id,
        session_id=record.id,
        is_live=decision.is_live,
        confidence=decision.confidence,
        reasons=list(decision.reasons),
        reference_key=reference_key,
        audit_keys=audit_keys,
    )
    return _Decided(document, event, _match_request(record, reference_key))


async def _restore_images(deps: Deps, record: SessionRecord) -> None:
    """This step copied images but another step's decision won: copy that decision's frames
    again (both wrote the same object keys; the stored decision names the winner's)."""
    state = await deps.states.get(record.id)
    if state is not None and state.decision is not None and state.progress is not None:
        progress = ReplayProgress.load(state.progress)
        await _keep_images(deps, record.id, progress, audit_image_count(record.settings))


def _step_messages(
    state: LivenessState, result: ReplayResult, decided: _Decided | None, thresholds: Thresholds
) -> list[Outgoing]:
    """What the step announces, in the order a client must see it: its new challenge events
    (beyond the counts written before), then the decision and the comparison it asks for."""
    messages = _new_events(state, result, thresholds)
    if decided is not None:
        messages.append(Outgoing.event(decided.event, EventKey.LIVENESS_DECIDED))
        if decided.match is not None:
            messages.append(Outgoing.command(decided.match, CommandKey.MATCH_REFERENCES))
    return messages


def _new_events(state: LivenessState, result: ReplayResult, thresholds: Thresholds) -> list[Outgoing]:
    """The step's events beyond the counts written before, in the order a client must see them."""
    session_id, challenges = state.session_id, result.challenges
    events: list[tuple[int, int, Outgoing]] = []
    if result.guidance is not None and result.guidance.changed:
        guidance = ReadinessChecked(
            correlation_id=session_id, session_id=session_id, problems=list(result.guidance.problems)
        )
        events.append((-1, 0, Outgoing.event(guidance, EventKey.READINESS_CHECKED)))
    for issued in result.issued[state.issued :]:
        message = _issued(session_id, issued.index, challenges, thresholds)
        events.append((issued.index, 0, Outgoing.event(message, EventKey.CHALLENGE_ISSUED)))
    for index in range(state.verdicts, len(result.verdicts)):
        verdict = result.verdicts[index]
        event = ChallengeVerdict(
            correlation_id=session_id,
            session_id=session_id,
            index=index,
            count=len(challenges),
            challenge=challenges[index].type,
            passed=verdict.status is ChallengeStatus.PASSED,
            reason=verdict.reason.value if verdict.reason is not None else None,
        )
        events.append((index, 1, Outgoing.event(event, EventKey.CHALLENGE_VERDICT)))
    return [message for _, _, message in sorted(events, key=lambda e: (e[0], e[1]))]


def _match_request(record: SessionRecord, probe_key: str | None) -> MatchReferences | None:
    """The comparison a decided session asks for (its best live frame against the reference photo
    the app gave), or None. Its message id is stored with the decision: only its answer counts."""
    if record.reference_key is None or probe_key is None:
        return None
    return MatchReferences(
        correlation_id=record.id,
        session_id=record.id,
        client_id=record.owner,
        probe=ImageData(storage_key=probe_key),
        references=[ImageData(storage_key=record.reference_key)],
    )


# -- finishing --------------------------------------------------------------------------------


def _lifecycle(deps: Deps) -> SessionLifecycle:
    return SessionLifecycle(deps.sessions)


async def _end(deps: Deps, session_id: str, outcome: Outcome) -> bool:
    """End the session (the one rule, the one application function); True when this call did."""
    ended = await _lifecycle(deps).end(session_id, outcome)
    if ended is None:
        return False
    deps.frames.forget(session_id)
    return True


async def finish(
    deps: Deps,
    session_id: str,
    *,
    comparison: ReferencesMatched | None = None,
    matcher_late: bool = False,
) -> bool:
    """End a decided session SUCCEEDED (live) or FAILED with its result; True when this call did.

    ``comparison``: the matcher's answer; ``matcher_late``: it did not come in time (a session
    with a reference image then gets the reason COMPARISON_UNAVAILABLE).
    """
    state = await deps.states.get(session_id)
    if state is None or state.decision is None:
        return False
    return await _end(deps, session_id, Decided(state.decision, comparison, matcher_late))


# -- handlers ---------------------------------------------------------------------------------


async def handle_session_started(event: SessionStarted, deps: Deps) -> None:
    """First time: draw the challenges, create the state, IN_PROGRESS; ChallengeIssued(0) once the
    subject's frames pass the pre-checks (services/liveness/readiness.py; ReadinessChecked until then).
    A new connection (reconnect): ChallengeIssued again for the current challenge."""
    if event.error is not None:
        return
    session_id = event.session_id
    record = await deps.sessions.fetch(session_id)
    if record is None or record.status.terminal:
        return
    state = await deps.states.get(session_id)
    created = False
    if state is None:
        challenges = session_challenges(record.settings, deps.rng)
        state, created = await deps.states.create_state(
            session_id,
            challenges=[StoredChallenge(type=c.type, target=c.target) for c in challenges],
            # The session's clock (the pre-checks' limit; the first challenge's starts when the
            # subject is ready) starts now, not when the call agent answered: a backlog of this
            # worker must not eat the user's time. Frames before are ignored (t < 0). max():
            # never before the connection, whatever the clocks say.
            started_at=max(event.occurred_at, utc_now()),
            connection_id=event.connection_id,
        )
    if record.status is SessionStatus.CREATED:
        # VersionConflict: it moved on meanwhile (another delivery, a finish, an expiry)
        with contextlib.suppress(VersionConflict):
            await deps.sessions.update_status(
                session_id, expected_version=record.version, status=SessionStatus.IN_PROGRESS
            )
            session_status(SessionStatus.IN_PROGRESS)
    written_before = state.issued
    result = await advance(deps, session_id)  # ChallengeIssued(0), and frames that came first
    if created or result is None:
        return
    current = len(result.issued) - 1
    announce = []
    if 0 <= current < written_before:  # not just written by advance (nor still getting ready)
        issued = _issued(session_id, current, list(result.challenges), deps.thresholds)
        announce.append(Outgoing.event(issued, EventKey.CHALLENGE_ISSUED))
    await deps.states.set_connection(session_id, event.connection_id, announce=announce)


async def handle_frame(event: FrameCaptured, deps: Deps) -> None:
    """Analyse the frame, store it (once per sequence), then replay the session."""
    session_id = event.session_id
    record = await deps.sessions.fetch(session_id)
    if record is None or record.status.terminal:
        return
    state = await deps.states.get(session_id)
    if state is not None and state.decision is not None:
        return
    try:
        data = await deps.store.get(event.storage_key)
        # the iris model only where a BLINK will read it (state None: not drawn yet, keep it)
        eyes = state is None or judges_eyes(c.type for c in state.challenges)
        analysed = await deps.frames.analyse(session_id, event.sequence, data, eyes=eyes)
    except (ObjectNotFound, InvalidFrame) as error:
        # a frame that cannot be read counts as a frame without a face: no gap waits for it
        log.warning("session %s frame %d unusable: %s", session_id, event.sequence, type(error).__name__)
        empty = FrameAnalysis(width=event.width, height=event.height, face_count=0, detected=True)
        analysed = AnalysedFrame(empty, None, None)
    frame = LivenessFrame(
        session_id=session_id,
        sequence=event.sequence,
        captured_at=event.captured_at,
        storage_key=event.storage_key,
        analysis=analysed.analysis.to_dict(),
        spoof_score=analysed.spoof_score,
        embedding=analysed.embedding,
        shown=event.shown,  # what the subject could see then, kept beside the analysis
        media_lead_s=event.media_lead_s,
    )
    # the state read above (a step that moved it meanwhile makes the write a VersionConflict, and
    # the step starts again from a fresh read); the frame is stored with the step that judges it
    await advance(deps, session_id, record=record, state=state, frame=frame)


async def handle_references_matched(event: ReferencesMatched, deps: Deps) -> None:
    """The matcher's answer to the MatchReferences this worker sent for a decided session (its
    stored request id, for the session's owner); anything else (a call flow's answer) is ignored."""
    session_id = event.session_id
    if session_id is None and event.flow_id is None:
        session_id = event.correlation_id  # an answer to a request sent before session_id existed
    if session_id is None:
        return
    record = await deps.sessions.fetch(session_id)
    if record is None or record.status.terminal or record.reference_key is None:
        return
    state = await deps.states.get(session_id)
    if state is None or state.decision is None:
        return
    if state.match_request_id != event.request_id or event.client_id != record.owner:
        log.warning("session %s: an answer to a request it did not send was ignored", session_id)
        return
    await finish(deps, session_id, comparison=event)


async def handle_expire(command: ExpireSession, deps: Deps) -> None:
    """Expire the session if it is unfinished and past its deadline."""
    await _end(deps, command.session_id, Expired())


async def sweep(deps: Deps, *, match_timeout_s: float) -> None:
    """Expire overdue sessions; finish decided sessions the matcher left waiting too long. Each
    session on its own: one that fails is logged and counted, the others go on (infra/sweeps.py)."""

    async def expired(session_id: str) -> None:
        await _end(deps, session_id, Expired())

    async def late_match(session_id: str) -> None:
        await finish(deps, session_id, matcher_late=True)

    overdue = await deps.sessions.overdue()
    await each(EXPIRY_SWEEPER, overdue, expired, name=lambda session_id: f"session {session_id}")
    late = datetime.now(UTC) - timedelta(seconds=match_timeout_s)
    waiting = await deps.states.waiting_for_match(decided_before=late)
    await each(EXPIRY_SWEEPER, waiting, late_match, name=lambda session_id: f"session {session_id}")
