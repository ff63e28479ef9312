"""The notifier's handlers: plain async functions, a typed message and :class:`Deps` in.

Exactly one terminal callback per flow: every ending goes through :func:`conclude`, whose
conditional update claims the flow's outcome once (duplicate and late events find it taken).
Each delivery attempt is claimed once by number, so a redelivered DeliverCallback does nothing,
and nothing is sent after a delivery succeeded or failed for good. Retries are scheduled in the
database (``next_attempt_at``), and the sweeper publishes them: see docs/calls.md.

The messages that follow a transition (FetchReferences, MatchReferences, DeliverCallback,
CallbackDelivered, the dead-letter record) are written to the outbox in the transition's
transaction (``then=``) and published by the notifier's relay (infra/outbox.py): none is lost when
the broker is down, and a relay's resend is a duplicate these handlers ignore (the flow's state
says it was handled).

A live flow's references are fetched by a command of its own (FetchReferences), not in the
SessionFinished consumer: a client over its share of fetches is put off like a callback attempt.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final
from urllib.parse import urlsplit

from contracts.commands import DeliverCallback, FetchReferences, MatchReferences
from contracts.documents import CallDecidedDetails, FlowDecision, SessionResult
from contracts.events import CallbackDelivered, CallFailed, ReferencesMatched, SessionFinished
from contracts.http import callback_url
from contracts.routing import NOTIFIER_CALLBACKS, CommandKey, EventKey
from contracts.values import CallbackOutcome, Fusion, ImageData, SessionStatus
from domain.flows import CLAIM_ATTEMPT, START_MATCHING, FlowStatus, conclusion
from domain.outgoing import Outgoing
from domain.ports import CommandPublisher, FlowStore, SessionReader
from domain.records import CallFlowRecord
from infra.broker import MAX_MESSAGE_BYTES
from infra.db.audit import AuditAction
from infra.db.errors import DatabaseError, DatabaseUnavailable
from infra.publisher import MessageTooLarge, body_size, check_size
from infra.sweeps import each
from infra.telemetry.metrics import callback_delivery, reference_fetch
from services.notifier.outcome import (
    CALLBACK_METHOD,
    COMPARISON_UNAVAILABLE,
    DELIVERY_HEADER,
    FLOW_TIMEOUT,
    NO_REFERENCE_FRAME,
    NO_VIDEO,
    REFERENCES_UNAVAILABLE,
    SIGNATURE_HEADER,
    RetryPolicy,
    callback_body,
    client_callback_key,
    encode_body,
    is_retryable_status,
    liveness_part,
    match_outcome,
    next_attempt_at,
    sign,
    with_reasons,
)
from services.notifier.ports import (
    AuditTrail,
    CallbackRefused,
    CallbackSender,
    CallbackUnreachable,
    PublishFailed,
    ReferenceSource,
    ReferencesUnavailable,
)
from services.notifier.shares import ClientShares

__all__ = [
    "FLOWS_SWEEPER",
    "Config",
    "Deps",
    "conclude",
    "handle_call_failed",
    "handle_deliver_callback",
    "handle_fetch_references",
    "handle_references_matched",
    "handle_session_finished",
    "sweep",
]

log = logging.getLogger("faceproof.notifier")

#: The flow sweep's name in logs and in ``faceproof_sweep_failures_total``.
FLOWS_SWEEPER: Final = "flows"
#: An attempt or a fetch put off because its client had its share running waits about this long.
POSTPONE_S: Final = 1.0
#: Recording a delivered callback while the database is down: the first pause, the longest, and
#: how long before the attempt's lease ends the notifier stops trying (the message is then retried).
RECORD_RETRY_FIRST_S: Final = 0.5
RECORD_RETRY_MAX_S: Final = 4.0
RECORD_LEASE_MARGIN_S: Final = 2.0


@dataclass(frozen=True)
class Config:
    retry: RetryPolicy
    #: How long the matcher may take once references are sent.
    match_timeout_s: float = 30.0
    #: A claimed attempt (or a published-but-unconsumed one) is re-sent after this long.
    lease_s: float = 30.0
    #: A flow's FetchReferences not handled (or still fetching) this long after it went out is
    #: sent again (a fetch takes up to twice FACEPROOF_FETCH_TIMEOUT_S: the list, then the images).
    fetch_lease_s: float = 30.0
    #: The deployment's callback secret, from which each client's signing key is derived
    #: (:func:`client_callback_key`); a flow's own secret takes precedence.
    secret: str | None = None


@dataclass(frozen=True)
class Deps:
    flows: FlowStore
    sessions: SessionReader
    #: What the sweeper publishes itself (a due retry: a leased row, sent again if lost); the
    #: messages that follow a transition go to the outbox instead.
    publisher: CommandPublisher
    references: ReferenceSource
    sender: CallbackSender
    config: Config
    #: Each client's share of this process's callback attempts (FACEPROOF_CALLBACKS_PER_CLIENT).
    shares: ClientShares
    #: ... and of its reference fetches (FACEPROOF_REFERENCE_FETCHES_PER_CLIENT).
    fetch_shares: ClientShares
    rng: random.Random = field(default_factory=random.SystemRandom, repr=False)
    audit: AuditTrail | None = None


def _now() -> datetime:
    return datetime.now(UTC)


# -- endings ----------------------------------------------------------------------------------


def _deliver_command(flow: CallFlowRecord, attempt: int) -> DeliverCallback:
    outcome = CallbackOutcome(flow.outcome or CallbackOutcome.FAILURE.value)
    return DeliverCallback(
        correlation_id=flow.id,
        flow_id=flow.id,
        url=callback_url(flow.callback_base_url, outcome, flow.token),
        outcome=outcome,
        body=callback_body(flow.id, flow.decision),
        attempt=attempt,
    )


async def conclude(
    deps: Deps, flow: CallFlowRecord, outcome: CallbackOutcome, decision: FlowDecision
) -> bool:
    """Claim the flow's one outcome and send its callback; False when it was concluded already."""
    status = conclusion(outcome).target
    concluded = await deps.flows.conclude(
        flow.id,
        outcome=outcome.value,
        status=status,
        decision=decision,
        # If attempt 1 is not made by then (a notifier that died with it), the sweeper sends it.
        first_attempt_at=_now() + timedelta(seconds=deps.config.lease_s),
        then=lambda won: [Outgoing.command(_deliver_command(won, 1), CommandKey.DELIVER_CALLBACK)],
    )
    if concluded is None:
        return False
    log.info("flow %s %s (%s)", flow.id, outcome.value, ", ".join(decision.reasons) or "-")
    await _audit_decision(deps, concluded, status, decision)
    return True


async def _audit_decision(
    deps: Deps, flow: CallFlowRecord, status: FlowStatus, decision: FlowDecision
) -> None:
    """One CALL_DECIDED record for the flow's one outcome (a failed write is logged, not retried:
    the flow's own row keeps the decision). No images, URLs, tokens or embeddings."""
    if deps.audit is None:
        return
    details = CallDecidedDetails(
        session_id=flow.session_id,
        is_live=decision.is_live,
        confidence=decision.confidence,
        reasons=list(decision.reasons),
        similarity=decision.similarity,
        match=decision.match,
    )
    try:
        await deps.audit.record(
            actor=flow.owner,
            action=AuditAction.CALL_DECIDED,
            subject_id=flow.id,
            outcome=status.value,
            details=details,
        )
    except DatabaseError as error:
        log.warning("flow %s: audit record not written: %s", flow.id, type(error).__name__)


async def _session_result(deps: Deps, session_id: str) -> SessionResult | None:
    record = await deps.sessions.fetch(session_id)
    return None if record is None else record.result


async def handle_session_finished(event: SessionFinished, deps: Deps) -> None:
    """A flow's liveness session ended: fail the flow, or start matching (its references are
    fetched by :func:`handle_fetch_references`, a command of its own that can be put off)."""
    flow = await deps.flows.by_session(event.session_id)
    if flow is None or flow.outcome is not None or not START_MATCHING.allows(flow.status):
        return  # a hosted-page session, or a repeated event: this flow is matching or has ended
    result = await _session_result(deps, event.session_id)
    decision = liveness_part(result)
    if event.status is not SessionStatus.SUCCEEDED or not decision.is_live:
        reasons = list(event.reasons) or [event.status.value]
        await conclude(deps, flow, CallbackOutcome.FAILURE, with_reasons(decision, *reasons))
        return
    if not _probe(result):
        await conclude(deps, flow, CallbackOutcome.FAILURE, with_reasons(decision, NO_REFERENCE_FRAME))
        return
    now = _now()
    await deps.flows.start_matching(  # None: another delivery of the event started it first
        flow.id,
        decision=decision,
        deadline=max(flow.deadline, now + timedelta(seconds=deps.config.match_timeout_s)),
        fetch_at=now + timedelta(seconds=deps.config.fetch_lease_s),
        then=lambda won: [Outgoing.command(_fetch_command(won), CommandKey.FETCH_REFERENCES)],
    )


def _probe(result: SessionResult | None) -> str | None:
    """The session's live reference frame, compared with the controller's references."""
    return None if result is None else result.reference_image_key


def _fetch_command(flow: CallFlowRecord) -> FetchReferences:
    return FetchReferences(correlation_id=flow.id, flow_id=flow.id)


async def handle_fetch_references(command: FetchReferences, deps: Deps) -> None:
    """Fetch a flow's references and send them to the matcher; put off when the flow's client has
    its share of fetches running (services/notifier/shares.py), as callback attempts are."""
    flow = await deps.flows.fetch(command.flow_id)
    if flow is None or not flow.fetching:
        return  # sent to the matcher already, or concluded
    with deps.fetch_shares.place(flow.owner) as placed:
        if placed:
            await _fetch_and_match(flow, deps)
        elif await deps.flows.postpone_fetch(flow.id, at=_postponed(deps)) is not None:
            reference_fetch("postponed")
            log.info("flow %s: reference fetch put off (its client's share in use)", flow.id)


async def _fetch_and_match(flow: CallFlowRecord, deps: Deps) -> None:
    decision = flow.decision or FlowDecision()
    probe = _probe(await _session_result(deps, flow.session_id))
    if not probe:  # the session was erased meanwhile
        await conclude(deps, flow, CallbackOutcome.FAILURE, with_reasons(decision, NO_REFERENCE_FRAME))
        return
    try:
        references = await deps.references.fetch(flow)
        outgoing = _match_references(flow, probe, references.images)
    except ReferencesUnavailable as error:
        reference_fetch("unavailable")
        log.info("flow %s: references unavailable: %s", flow.id, error)
        failed = with_reasons(decision, REFERENCES_UNAVAILABLE)
        await conclude(
            deps, flow, CallbackOutcome.FAILURE, failed.model_copy(update={"reference_errors": [str(error)]})
        )
        return
    sent = await deps.flows.send_references(  # None: another fetch of the flow sent them first
        flow.id,
        decision=decision.model_copy(
            update={"references_used": len(references.images), "reference_errors": list(references.errors)}
        ),
        deadline=max(flow.deadline, _now() + timedelta(seconds=deps.config.match_timeout_s)),
        request_id=outgoing.message_id,
        then=lambda _: [outgoing],
    )
    if sent is not None:
        reference_fetch("sent")


def _match_references(flow: CallFlowRecord, probe: str, images: list[bytes]) -> Outgoing:
    """The MatchReferences for a flow's references. The images travel inline, so together they must
    fit one message: else ReferencesUnavailable (the broker would refuse it, for ever)."""
    command = MatchReferences(
        correlation_id=flow.id,
        flow_id=flow.id,
        client_id=flow.owner,
        probe=ImageData(storage_key=probe),
        references=[ImageData(inline=image) for image in images],
        fusion=Fusion.MAX,
    )
    outgoing = Outgoing.command(command, CommandKey.MATCH_REFERENCES)
    try:
        check_size(body_size(outgoing))
    except MessageTooLarge:
        raise ReferencesUnavailable(
            f"the {len(images)} reference images are over {MAX_MESSAGE_BYTES} bytes together"
        ) from None
    return outgoing


async def handle_references_matched(event: ReferencesMatched, deps: Deps) -> None:
    """The matcher's answer to the MatchReferences this notifier sent for a flow waiting for it
    (its stored request id, for the flow's owner); anything else (answers for sessions, forged or
    stale answers) is ignored."""
    flow_id = event.flow_id
    if flow_id is None and event.session_id is None:
        flow_id = event.correlation_id  # an answer to a request sent before flow_id existed
    if flow_id is None:
        return
    flow = await deps.flows.fetch(flow_id)
    if flow is None or flow.outcome is not None or flow.status is not FlowStatus.MATCHING:
        return
    if flow.match_request_id != event.request_id or event.client_id != flow.owner:
        log.warning("flow %s: an answer to a request it did not send was ignored", flow.id)
        return
    outcome, decision = match_outcome(flow.decision or FlowDecision(), event)
    await conclude(deps, flow, outcome, decision)


async def handle_call_failed(event: CallFailed, deps: Deps) -> None:
    """The call agent could not join or keep the room: the flow fails, unless its session has
    ended already. Then the session's own ending decides (:func:`handle_session_finished`): a room
    that drops during the hang-up after a passed session must not fail a flow that is matching, or
    whose SessionFinished is still on its way (the two events come in on different queues)."""
    flow = await deps.flows.fetch(event.flow_id)
    if flow is None or flow.outcome is not None or flow.status is not FlowStatus.RUNNING:
        return
    if event.session_id != flow.session_id:
        log.warning("flow %s: a CallFailed for another session was ignored", flow.id)
        return
    session = await deps.sessions.fetch(flow.session_id)
    if session is not None and session.status.terminal:
        return
    decision = liveness_part(None if session is None else session.result)
    await conclude(deps, flow, CallbackOutcome.FAILURE, with_reasons(decision, event.reason))


# -- delivery ---------------------------------------------------------------------------------


def _signing_key(flow: CallFlowRecord, config: Config) -> str | None:
    """The flow's own secret, else its client's key (derived from the deployment's secret), else none."""
    if flow.callback_secret:
        return flow.callback_secret
    return client_callback_key(config.secret, flow.owner) if config.secret else None


def _request(flow: CallFlowRecord, secret: str | None, url: str) -> tuple[bytes, dict[str, str]]:
    """Without a secret, the seed's empty body; with one, the result and its signature (over the
    method, the URL's path, the time and the body)."""
    if not secret:
        return b"", {DELIVERY_HEADER: flow.id}
    body = encode_body(callback_body(flow.id, flow.decision))
    signature = sign(
        secret, method=CALLBACK_METHOD, path=urlsplit(url).path, body=body, timestamp=int(time.time())
    )
    return body, {"Content-Type": "application/json", SIGNATURE_HEADER: signature, DELIVERY_HEADER: flow.id}


async def handle_deliver_callback(command: DeliverCallback, deps: Deps) -> None:
    """One delivery attempt: PUT, then delivered, a retry scheduled, or failed for good; put
    off when the flow's client has its share of attempts running (services/notifier/shares.py)."""
    flow = await deps.flows.fetch(command.flow_id)
    if flow is None or not CLAIM_ATTEMPT.allows(flow.delivery) or flow.attempts != command.attempt - 1:
        return  # delivered, failed, or this attempt was made already
    with deps.shares.place(flow.owner) as placed:
        if placed:
            await _attempt(command, flow, deps)
        else:
            await _postpone(command, flow, deps)


def _postponed(deps: Deps) -> datetime:
    """When a put-off attempt or fetch is due: in about :data:`POSTPONE_S` (the sweeper sends it
    again then), jittered so that a client's put-off work does not come back all at once."""
    return _now() + timedelta(seconds=POSTPONE_S * deps.rng.uniform(0.5, 1.5))


async def _postpone(command: DeliverCallback, flow: CallFlowRecord, deps: Deps) -> None:
    """Put the attempt off (the sweeper sends it again)."""
    if await deps.flows.postpone(flow.id, command.attempt, at=_postponed(deps)) is not None:
        callback_delivery("postponed")
        log.info("flow %s: callback attempt %d put off (its client's share in use)", flow.id, command.attempt)


async def _attempt(command: DeliverCallback, flow: CallFlowRecord, deps: Deps) -> None:
    lease = _now() + timedelta(seconds=deps.config.lease_s)
    claimed = await deps.flows.claim_attempt(flow.id, command.attempt, lease_until=lease)
    if claimed is None:
        return
    outcome = CallbackOutcome(claimed.outcome or CallbackOutcome.FAILURE.value)
    url = callback_url(claimed.callback_base_url, outcome, claimed.token)
    body, headers = _request(claimed, _signing_key(claimed, deps.config), url)
    try:
        status = await deps.sender.put(url, body, headers)
    except CallbackRefused as error:
        await _give_up(deps, claimed, command, str(error), None)
        return
    except CallbackUnreachable as error:
        await _retry_or_give_up(deps, claimed, command, str(error), None)
        return
    if 200 <= status < 300:
        delivered = await _record_delivered(deps, claimed, command.attempt, status, lease)
        if delivered is not None:
            callback_delivery("delivered")
            log.info(
                "flow %s: %s callback delivered (attempt %d)", claimed.id, outcome.value, command.attempt
            )
    elif is_retryable_status(status):
        await _retry_or_give_up(deps, claimed, command, f"HTTP {status}", status)
    else:
        await _give_up(deps, claimed, command, f"HTTP {status}", status)


async def _record_delivered(
    deps: Deps, flow: CallFlowRecord, attempt: int, status: int, lease: datetime
) -> CallFlowRecord | None:
    """Record a callback the controller took. While the database is unavailable (a restart), try
    again until shortly before the attempt's lease ends: once it ends the sweeper sends the
    callback again, and the controller would get it twice (it can drop the repeat by its
    ``X-Faceproof-Delivery``, but most controllers would not)."""
    pause_s = RECORD_RETRY_FIRST_S
    while True:
        try:
            return await deps.flows.mark_delivered(
                flow.id,
                attempt,
                status_code=status,
                then=lambda ended: [_delivered_event(ended, attempt, True, status)],
            )
        except DatabaseUnavailable:
            if _now() + timedelta(seconds=pause_s + RECORD_LEASE_MARGIN_S) >= lease:
                raise
            log.warning("flow %s: callback delivered, recording it waits for the database", flow.id)
            await asyncio.sleep(pause_s)
            pause_s = min(2 * pause_s, RECORD_RETRY_MAX_S)


async def _retry_or_give_up(
    deps: Deps, flow: CallFlowRecord, command: DeliverCallback, error: str, status: int | None
) -> None:
    now = _now()
    at = next_attempt_at(
        deps.config.retry, attempt=command.attempt, first_at=flow.finished_at or now, now=now, rng=deps.rng
    )
    if at is None:
        await _give_up(deps, flow, command, f"{error} (retries exhausted)", status)
        return
    log.info("flow %s: callback attempt %d failed (%s); next at %s", flow.id, command.attempt, error, at)
    await deps.flows.retry_later(flow.id, command.attempt, at=at, error=error, status_code=status)
    callback_delivery("retry")


async def _give_up(
    deps: Deps, flow: CallFlowRecord, command: DeliverCallback, error: str, status: int | None
) -> None:
    failed = await deps.flows.mark_failed(
        flow.id,
        command.attempt,
        error=error,
        status_code=status,
        then=lambda ended: [
            Outgoing.dead_letter(command, NOTIFIER_CALLBACKS.queue, error),
            _delivered_event(ended, command.attempt, False, status),
        ],
    )
    if failed is None:
        return
    callback_delivery("failed")
    log.warning("flow %s: callback not delivered after %d attempts: %s", flow.id, command.attempt, error)


def _delivered_event(flow: CallFlowRecord, attempts: int, delivered: bool, status: int | None) -> Outgoing:
    event = CallbackDelivered(
        correlation_id=flow.id,
        flow_id=flow.id,
        outcome=CallbackOutcome(flow.outcome or CallbackOutcome.FAILURE.value),
        delivered=delivered,
        attempts=attempts,
        status_code=status,
    )
    return Outgoing.event(event, EventKey.CALLBACK_DELIVERED)


# -- the sweeper ------------------------------------------------------------------------------


async def _timeout_reasons(deps: Deps, flow: CallFlowRecord) -> FlowDecision:
    record = await deps.sessions.fetch(flow.session_id)
    decision = flow.decision or liveness_part(None if record is None else record.result)
    if flow.fetching:
        return with_reasons(decision, REFERENCES_UNAVAILABLE, FLOW_TIMEOUT)
    if flow.status is FlowStatus.MATCHING:
        return with_reasons(decision, COMPARISON_UNAVAILABLE, FLOW_TIMEOUT)
    if record is None or record.status is SessionStatus.CREATED:
        return with_reasons(decision, NO_VIDEO, FLOW_TIMEOUT)
    return with_reasons(decision, FLOW_TIMEOUT)


async def sweep(deps: Deps) -> None:
    """Fail flows past their deadline; (re)send the callbacks whose next attempt is due. Each flow
    on its own: one that fails is logged and counted, the others go on (infra/sweeps.py)."""
    now = _now()

    async def time_out(flow: CallFlowRecord) -> None:
        await conclude(deps, flow, CallbackOutcome.FAILURE, await _timeout_reasons(deps, flow))

    async def resend(flow: CallFlowRecord) -> None:
        try:
            await deps.publisher.command(
                _deliver_command(flow, flow.attempts + 1), CommandKey.DELIVER_CALLBACK
            )
        except PublishFailed:
            log.warning("flow %s: retry not published; again after the lease", flow.id)

    async def refetch(flow: CallFlowRecord) -> None:
        try:
            await deps.publisher.command(_fetch_command(flow), CommandKey.FETCH_REFERENCES)
        except PublishFailed:
            log.warning("flow %s: reference fetch not published; again after the lease", flow.id)

    await each(FLOWS_SWEEPER, await deps.flows.overdue(now=now), time_out, name=_flow_name)
    fetch_lease = now + timedelta(seconds=deps.config.fetch_lease_s)
    fetches = await deps.flows.claim_due_fetches(now=now, lease_until=fetch_lease)
    await each(FLOWS_SWEEPER, fetches, refetch, name=_flow_name)
    lease = now + timedelta(seconds=deps.config.lease_s)
    due = await deps.flows.claim_due_deliveries(now=now, lease_until=lease)
    await each(FLOWS_SWEEPER, due, resend, name=_flow_name)


def _flow_name(flow: CallFlowRecord) -> str:
    return f"flow {flow.id}"
