"""The call flow's state machine (domain/flows.py): every allowed and every forbidden transition,
the terminal states, and exactly one callback on every way a flow can end. Pure: no I/O."""

from __future__ import annotations

from itertools import product

import pytest

from contracts.commands import DeliverCallback, FetchReferences, MatchReferences
from contracts.events import CallbackDelivered
from contracts.values import CallbackOutcome
from domain.flows import (
    CLAIM_ATTEMPT,
    DELIVERY_TRANSITIONS,
    FAIL,
    FLOW_TRANSITIONS,
    GIVE_UP,
    MARK_DELIVERED,
    POSTPONE_FETCH,
    RETRY_LATER,
    SEND_REFERENCES,
    START_MATCHING,
    SUCCEED,
    DeliveryStatus,
    FlowStatus,
    Transition,
    conclusion,
    ending,
    fetching,
)

RUNNING, MATCHING, SUCCEEDED, FAILED = FlowStatus

#: Every move a flow may make, written out by hand: (from, to) -> what follows each move between
#: them (a MATCHING flow sends its references once, or puts its fetch off: nothing follows that).
ALLOWED: dict[tuple[FlowStatus, FlowStatus], set[tuple[type, ...]]] = {
    (RUNNING, MATCHING): {(FetchReferences,)},
    (MATCHING, MATCHING): {(MatchReferences,), ()},
    (RUNNING, SUCCEEDED): {(DeliverCallback,)},
    (RUNNING, FAILED): {(DeliverCallback,)},
    (MATCHING, SUCCEEDED): {(DeliverCallback,)},
    (MATCHING, FAILED): {(DeliverCallback,)},
}


def _moves(source: FlowStatus) -> list[Transition[FlowStatus]]:
    return [transition for transition in FLOW_TRANSITIONS if transition.allows(source)]


@pytest.mark.parametrize(("source", "target"), list(product(FlowStatus, FlowStatus)))
def test_each_flow_move_is_allowed_only_if_listed(source: FlowStatus, target: FlowStatus) -> None:
    taken = [transition for transition in _moves(source) if transition.target is target]
    if (source, target) in ALLOWED:
        listed = ALLOWED[source, target]
        assert len(taken) == len(listed) and {move.emits for move in taken} == listed
    else:
        assert taken == []


def test_the_terminal_states_are_the_outcomes_and_nothing_leaves_them() -> None:
    assert {status for status in FlowStatus if status.terminal} == {SUCCEEDED, FAILED}
    assert _moves(SUCCEEDED) == _moves(FAILED) == []
    assert not RUNNING.terminal and not MATCHING.terminal
    assert not any(transition.allows(None) for transition in FLOW_TRANSITIONS)


def _endings(
    status: FlowStatus, path: tuple[Transition[FlowStatus], ...] = ()
) -> list[tuple[Transition[FlowStatus], ...]]:
    """Every path from ``status`` to a terminal state."""
    if status.terminal:
        return [path]
    return [
        end
        for move in _moves(status)
        if move not in path  # a move that keeps the status is taken once at most (see below)
        for end in _endings(move.target, (*path, move))
    ]


def test_every_way_to_end_sends_exactly_one_callback() -> None:
    paths = _endings(RUNNING)
    # fail or succeed while running; or matching, then fail or succeed with or without the
    # references sent, with or without a fetch put off (the status allows either order;
    # ``fetching`` below refuses a put-off after the send)
    assert len(paths) == 2 + 2 * 5
    for path in paths:
        callbacks = [move for move in path if DeliverCallback in move.emits]
        assert len(callbacks) == 1 and callbacks[0] is path[-1], [move.name for move in path]


def test_the_outcome_names_its_transition_and_its_status() -> None:
    assert conclusion(CallbackOutcome.SUCCESS) is SUCCEED and SUCCEED.target is SUCCEEDED
    assert conclusion(CallbackOutcome.FAILURE) is FAIL and FAIL.target is FAILED
    assert ending(SUCCEEDED) is SUCCEED and ending(FAILED) is FAIL
    for status in (RUNNING, MATCHING):
        with pytest.raises(ValueError, match="not a flow's outcome"):
            ending(status)


def test_matching_starts_once_and_only_from_running() -> None:
    assert START_MATCHING.allows(RUNNING)
    assert not START_MATCHING.allows(MATCHING)  # a repeated SessionFinished finds it matching


def test_only_a_matching_flow_without_an_outcome_or_a_request_sent_is_fetching() -> None:
    """What SEND_REFERENCES and POSTPONE_FETCH also require: sent once, never put off after."""
    assert SEND_REFERENCES.sources == POSTPONE_FETCH.sources == {MATCHING}
    assert fetching(MATCHING, None, None)
    assert not fetching(MATCHING, None, "request-1")  # sent to the matcher: a repeat does nothing
    assert not fetching(MATCHING, "FAILURE", None)
    assert not any(fetching(status, None, None) for status in (RUNNING, SUCCEEDED, FAILED))


PENDING, DELIVERED, UNDELIVERED = DeliveryStatus


@pytest.mark.parametrize("transition", DELIVERY_TRANSITIONS, ids=lambda transition: transition.name)
@pytest.mark.parametrize("source", [None, *DeliveryStatus])
def test_a_delivery_moves_only_while_pending(
    transition: Transition[DeliveryStatus], source: DeliveryStatus | None
) -> None:
    assert transition.allows(source) is (source is PENDING)


def test_a_delivery_ends_once_delivered_or_given_up_and_says_so_once() -> None:
    assert {status for status in DeliveryStatus if status.terminal} == {DELIVERED, UNDELIVERED}
    assert (MARK_DELIVERED.target, GIVE_UP.target) == (DELIVERED, UNDELIVERED)
    assert MARK_DELIVERED.emits == GIVE_UP.emits == (CallbackDelivered,)
    assert CLAIM_ATTEMPT.target is RETRY_LATER.target is PENDING
    assert CLAIM_ATTEMPT.emits == RETRY_LATER.emits == ()  # no new callback, only the same one again
