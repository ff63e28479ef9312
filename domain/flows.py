"""The video-call flow's state machine (pure, no I/O): its states, the transitions allowed between
them, which are terminal, and which message follows each transition.

A flow's life::

    RUNNING ──start_matching──> MATCHING          emits FetchReferences (its session was live)
    MATCHING ─send_references─> MATCHING          emits MatchReferences (references fetched; once)
    MATCHING ─postpone_fetch──> MATCHING          (its client's share of fetches was in use)
    RUNNING ──succeed / fail──> SUCCEEDED / FAILED emits DeliverCallback (attempt 1): the callback
    MATCHING ─succeed / fail──> SUCCEEDED / FAILED

A MATCHING flow fetches its references until ``send_references`` records the MatchReferences it
sent (``match_request_id``; :func:`fetching`); from then on it waits for the matcher's answer.

SUCCEEDED and FAILED are terminal: nothing leaves them, and the one transition into them is the
flow's one outcome, so every flow ends with exactly one callback (SUCCESS or FAILURE). The outcome
opens the callback's delivery, a machine of its own::

    PENDING ──claim_attempt / retry_later──> PENDING     (attempt n claimed once, by its number)
    PENDING ──mark_delivered──> DELIVERED                 emits CallbackDelivered (delivered)
    PENDING ──mark_failed────> FAILED                     emits CallbackDelivered (given up) and
                                                          the DeliverCallback's dead-letter record

``infra.db.flows.CallFlowRepository`` applies each transition as one conditional ``UPDATE ...
WHERE status IN (<its sources>)`` whose winner alone gets the row back and writes the emitted
messages to the outbox in the same transaction; the sources come from here, so the SQL cannot
disagree with the rule. The notifier (``services/notifier/handlers.py``) asks these transitions
whether an event still applies to a flow.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final, Generic, TypeVar

from contracts.commands import DeliverCallback, FetchReferences, MatchReferences
from contracts.envelope import Message
from contracts.events import CallbackDelivered
from contracts.values import CallbackOutcome

__all__ = [
    "CLAIM_ATTEMPT",
    "DELIVERY_TRANSITIONS",
    "FAIL",
    "FLOW_TRANSITIONS",
    "GIVE_UP",
    "MARK_DELIVERED",
    "OUTCOMES",
    "POSTPONE",
    "POSTPONE_FETCH",
    "RETRY_LATER",
    "SEND_REFERENCES",
    "START_MATCHING",
    "SUCCEED",
    "DeliveryStatus",
    "FlowStatus",
    "Transition",
    "conclusion",
    "ending",
    "fetching",
]


class FlowStatus(StrEnum):
    RUNNING = "RUNNING"  # waiting for the call agent and the liveness session
    MATCHING = "MATCHING"  # live; fetching its references, then waiting for the matcher
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"

    @property
    def terminal(self) -> bool:
        return not any(self in transition.sources for transition in FLOW_TRANSITIONS)


class DeliveryStatus(StrEnum):
    """The callback's delivery; none (``None``) until the flow's outcome opens it PENDING."""

    PENDING = "PENDING"
    DELIVERED = "DELIVERED"
    FAILED = "FAILED"

    @property
    def terminal(self) -> bool:
        return not any(self in transition.sources for transition in DELIVERY_TRANSITIONS)


S = TypeVar("S", FlowStatus, DeliveryStatus)


@dataclass(frozen=True, slots=True)
class Transition(Generic[S]):
    """One allowed move: from any of ``sources`` to ``target``; ``emits``: the messages that follow
    it (written to the outbox in its transaction)."""

    name: str
    sources: frozenset[S]
    target: S
    emits: tuple[type[Message], ...] = ()

    def allows(self, status: S | None) -> bool:
        """Whether a flow (or delivery) in ``status`` may take this transition now."""
        return status in self.sources


_LIVE: Final = frozenset({FlowStatus.RUNNING, FlowStatus.MATCHING})

START_MATCHING: Final = Transition(
    "start_matching", frozenset({FlowStatus.RUNNING}), FlowStatus.MATCHING, (FetchReferences,)
)
_MATCHING: Final = frozenset({FlowStatus.MATCHING})
#: The references fetched: the MatchReferences sent, once (only a flow still :func:`fetching`).
SEND_REFERENCES: Final = Transition("send_references", _MATCHING, FlowStatus.MATCHING, (MatchReferences,))
#: A fetch put off (its client's share of the notifier's fetches was in use; only while fetching).
POSTPONE_FETCH: Final = Transition("postpone_fetch", _MATCHING, FlowStatus.MATCHING)
#: The flow's outcome, SUCCESS or FAILURE: its one callback (DeliverCallback, attempt 1).
SUCCEED: Final = Transition("succeed", _LIVE, FlowStatus.SUCCEEDED, (DeliverCallback,))
FAIL: Final = Transition("fail", _LIVE, FlowStatus.FAILED, (DeliverCallback,))
#: The transitions that give a flow its one outcome (and its one callback).
OUTCOMES: Final[tuple[Transition[FlowStatus], ...]] = (SUCCEED, FAIL)
FLOW_TRANSITIONS: Final[tuple[Transition[FlowStatus], ...]] = (
    START_MATCHING,
    SEND_REFERENCES,
    POSTPONE_FETCH,
    *OUTCOMES,
)

_PENDING: Final = frozenset({DeliveryStatus.PENDING})

CLAIM_ATTEMPT: Final = Transition("claim_attempt", _PENDING, DeliveryStatus.PENDING)
RETRY_LATER: Final = Transition("retry_later", _PENDING, DeliveryStatus.PENDING)
#: An attempt not made yet, put off (its client's share of the notifier was in use): no attempt counted.
POSTPONE: Final = Transition("postpone", _PENDING, DeliveryStatus.PENDING)
MARK_DELIVERED: Final = Transition("mark_delivered", _PENDING, DeliveryStatus.DELIVERED, (CallbackDelivered,))
#: Given up: CallbackDelivered (delivered false) and the DeliverCallback's dead-letter record.
GIVE_UP: Final = Transition("mark_failed", _PENDING, DeliveryStatus.FAILED, (CallbackDelivered,))
DELIVERY_TRANSITIONS: Final[tuple[Transition[DeliveryStatus], ...]] = (
    CLAIM_ATTEMPT,
    RETRY_LATER,
    POSTPONE,
    MARK_DELIVERED,
    GIVE_UP,
)


def conclusion(outcome: CallbackOutcome) -> Transition[FlowStatus]:
    """The transition that gives a flow ``outcome``: SUCCESS succeeds it, FAILURE fails it."""
    return SUCCEED if outcome is CallbackOutcome.SUCCESS else FAIL


def ending(status: FlowStatus) -> Transition[FlowStatus]:
    """The outcome transition into ``status`` (SUCCEED into SUCCEEDED, FAIL into FAILED);
    ``ValueError`` for a status that is not an outcome."""
    for transition in OUTCOMES:
        if transition.target is status:
            return transition
    raise ValueError(f"{status.value} is not a flow's outcome")


def fetching(status: FlowStatus, outcome: str | None, match_request_id: str | None) -> bool:
    """Whether a flow is fetching its references: MATCHING, no outcome, no MatchReferences sent."""
    return status is FlowStatus.MATCHING and outcome is None and match_request_id is None
