"""The notifier's handlers (services/notifier/handlers.py) over in-memory ports: how a video-call
flow ends (its one outcome, reasons and audit record), what follows (MatchReferences, the one
DeliverCallback, CallbackDelivered, the dead letter) and what the controller receives."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import pytest

from contracts.commands import DeliverCallback, FetchReferences
from contracts.documents import FlowDecision
from contracts.events import CallFailed, ReferencesMatched, SessionFinished
from contracts.routing import COMMANDS_EXCHANGE, DEAD_LETTER_EXCHANGE, EVENTS_EXCHANGE, CommandKey, EventKey
from contracts.values import CallbackOutcome, ErrorCode, ErrorInfo, Fusion, ModelInfo, SessionStatus
from domain.flows import DeliveryStatus, FlowStatus
from domain.records import CallFlowRecord
from infra.db.audit import AuditAction
from infra.db.errors import DatabaseUnavailable
from infra.telemetry.metrics import REGISTRY
from services.notifier import handlers
from services.notifier.handlers import (
    conclude,
    handle_call_failed,
    handle_deliver_callback,
    handle_fetch_references,
    handle_references_matched,
    handle_session_finished,
    sweep,
)
from services.notifier.outcome import DELIVERY_HEADER, SIGNATURE_HEADER, client_callback_key, sign
from services.notifier.ports import ReferenceImages
from services.notifier.shares import ClientShares
from tests.unit.notifier.fakes import (
    REFUSED,
    UNREACHABLE,
    FakeController,
    FakeReferences,
    Notifier,
    RetryPolicy,
)

LIVE = {"isLive": True, "confidence": 0.93, "reasons": [], "referenceImageKey": "sessions/session-1/best.jpg"}
MODEL = ModelInfo(pack="fake", licence="MIT", commercial_use=True)


def finished(status: SessionStatus = SessionStatus.SUCCEEDED, *reasons: str) -> SessionFinished:
    return SessionFinished(
        correlation_id="session-1", session_id="session-1", status=status, reasons=list(reasons)
    )


def deliveries(notifier: Notifier) -> list[DeliverCallback]:
    return [
        DeliverCallback.model_validate(sent.payload)
        for sent in notifier.sent(COMMANDS_EXCHANGE, CommandKey.DELIVER_CALLBACK)
    ]


def callback_events(notifier: Notifier) -> list[dict[str, object]]:
    return [sent.payload for sent in notifier.sent(EVENTS_EXCHANGE, EventKey.CALLBACK_DELIVERED)]


def fetches(notifier: Notifier) -> list[FetchReferences]:
    return [
        FetchReferences.model_validate(sent.payload)
        for sent in notifier.sent(COMMANDS_EXCHANGE, CommandKey.FETCH_REFERENCES)
    ]


def matched(notifier: Notifier) -> list[str]:
    """The flows whose MatchReferences went to the matcher, in order."""
    return [sent.payload["flow_id"] for sent in notifier.sent(COMMANDS_EXCHANGE, CommandKey.MATCH_REFERENCES)]


async def finish(notifier: Notifier) -> None:
    """The flow's live session ended; then each FetchReferences it caused is handled (as the
    notifier's own consumer would), repeats included."""
    await handle_session_finished(finished(), notifier.deps)
    for command in fetches(notifier):
        await handle_fetch_references(command, notifier.deps)


def answer(notifier: Notifier, *, match: bool = True, **values: object) -> ReferencesMatched:
    flow = notifier.flows.rows["flow-1"]
    fields: dict[str, object] = {
        "correlation_id": flow.id,
        "flow_id": flow.id,
        "client_id": flow.owner,
        "request_id": flow.match_request_id,
        "model": MODEL,
        "similarity": 0.88 if match else 0.2,
        "match": match,
        "fusion": Fusion.MAX,
    }
    return ReferencesMatched.model_validate({**fields, **values})


async def matching(notifier: Notifier) -> None:
    """A flow whose live session ended: references fetched, MatchReferences sent."""
    notifier.flows.add()
    notifier.sessions.add("session-1", SessionStatus.SUCCEEDED, LIVE)
    await finish(notifier)


# --------------------------------------------------------------------------- how a flow ends


async def test_a_failed_session_fails_its_flow_once_with_the_sessions_reasons() -> None:
    notifier = Notifier()
    notifier.flows.add()
    notifier.sessions.add(
        "session-1", SessionStatus.FAILED, {"isLive": False, "confidence": 0.1, "reasons": ["SPOOF"]}
    )
    await handle_session_finished(finished(SessionStatus.FAILED, "CHALLENGE_FAILED"), notifier.deps)
    await handle_session_finished(finished(SessionStatus.FAILED, "CHALLENGE_FAILED"), notifier.deps)  # again
    flow = notifier.flows.rows["flow-1"]
    assert (flow.status, flow.outcome, flow.delivery) == (
        FlowStatus.FAILED,
        "FAILURE",
        DeliveryStatus.PENDING,
    )
    assert flow.decision is not None and flow.decision.reasons == ["SPOOF", "CHALLENGE_FAILED"]
    [delivery] = deliveries(notifier)
    assert (delivery.flow_id, delivery.attempt, delivery.outcome) == ("flow-1", 1, CallbackOutcome.FAILURE)
    assert str(delivery.url) == "https://controller.example/cb/failure/tok%2F1"
    [record] = notifier.audit.records
    assert (record["action"], record["subject_id"], record["outcome"]) == (
        AuditAction.CALL_DECIDED,
        "flow-1",
        "FAILED",
    )
    assert record["actor"] == "client-1" and "tok/1" not in json.dumps(record["details"])


async def test_a_hosted_page_session_has_no_flow_and_sends_nothing() -> None:
    notifier = Notifier()
    await handle_session_finished(finished(), notifier.deps)
    assert notifier.sent() == [] and notifier.audit.records == []


async def test_a_live_session_sends_the_best_frame_and_the_references_to_the_matcher_once() -> None:
    notifier = Notifier(references=FakeReferences(errors=["reference 2: NotAnImage"]))
    await matching(notifier)
    await finish(notifier)  # a repeated event, and its FetchReferences again
    [sent] = notifier.sent(COMMANDS_EXCHANGE, CommandKey.MATCH_REFERENCES)
    command = sent.payload
    assert command["probe"] == {"inline": None, "storage_key": "sessions/session-1/best.jpg"}
    assert len(command["references"]) == 2 and command["client_id"] == "client-1"
    assert (command["flow_id"], command["session_id"]) == ("flow-1", None)  # whose comparison it is
    flow = notifier.flows.rows["flow-1"]
    assert flow.status is FlowStatus.MATCHING and flow.match_request_id == command["message_id"]
    assert flow.decision is not None
    assert (flow.decision.references_used, flow.decision.reference_errors) == (
        2,
        ["reference 2: NotAnImage"],
    )
    assert deliveries(notifier) == []


@pytest.mark.parametrize(
    ("result", "references", "reason"),
    [
        ({**LIVE, "referenceImageKey": None}, FakeReferences(), "NO_REFERENCE_FRAME"),
        (LIVE, FakeReferences(unavailable="the reference list is not JSON"), "REFERENCES_UNAVAILABLE"),
        ({**LIVE, "isLive": False}, FakeReferences(), "SUCCEEDED"),
    ],
)
async def test_a_live_session_without_what_matching_needs_fails(
    result: dict[str, object], references: FakeReferences, reason: str
) -> None:
    notifier = Notifier(references=references)
    notifier.flows.add()
    notifier.sessions.add("session-1", SessionStatus.SUCCEEDED, result)
    await finish(notifier)
    flow = notifier.flows.rows["flow-1"]
    assert flow.outcome == "FAILURE" and flow.decision is not None and reason in flow.decision.reasons
    assert notifier.sent(COMMANDS_EXCHANGE, CommandKey.MATCH_REFERENCES) == []
    assert len(deliveries(notifier)) == 1


async def test_references_too_large_for_one_message_fail_the_flow_saying_so() -> None:
    """Two photos of 7 MiB (each under the 10 MiB image limit) are over what one message may carry
    once base64-encoded: the broker would refuse the MatchReferences for ever (and the outbox relay
    would have retried it, holding back every message after it). The flow fails at once, with one
    callback that says why, and nothing is written for the matcher."""
    seven_mib = b"\xff" * (7 * 1024 * 1024)
    notifier = Notifier(references=FakeReferences(images=[seven_mib, seven_mib]))
    notifier.flows.add()
    notifier.sessions.add("session-1", SessionStatus.SUCCEEDED, LIVE)
    await finish(notifier)
    flow = notifier.flows.rows["flow-1"]
    assert flow.outcome == "FAILURE" and flow.decision is not None
    assert "REFERENCES_UNAVAILABLE" in flow.decision.reasons
    assert flow.decision.reference_errors == ["the 2 reference images are over 16711680 bytes together"]
    assert notifier.sent(COMMANDS_EXCHANGE, CommandKey.MATCH_REFERENCES) == []
    assert len(deliveries(notifier)) == 1
    one = Notifier(references=FakeReferences(images=[seven_mib]))  # one of them fits
    one.flows.add()
    one.sessions.add("session-1", SessionStatus.SUCCEEDED, LIVE)
    await finish(one)
    assert len(one.sent(COMMANDS_EXCHANGE, CommandKey.MATCH_REFERENCES)) == 1


async def test_a_match_succeeds_with_its_similarity() -> None:
    notifier = Notifier()
    await matching(notifier)
    await handle_references_matched(answer(notifier), notifier.deps)
    flow = notifier.flows.rows["flow-1"]
    assert (flow.status, flow.outcome) == (FlowStatus.SUCCEEDED, "SUCCESS")
    assert flow.decision is not None and (flow.decision.similarity, flow.decision.match) == (0.88, True)
    [delivery] = deliveries(notifier)
    assert delivery.outcome is CallbackOutcome.SUCCESS and str(delivery.url).endswith("/success/tok%2F1")
    assert delivery.body["similarity"] == 0.88 and delivery.body["isLive"] is True


@pytest.mark.parametrize(
    ("values", "reason"),
    [
        ({"match": False}, "FACE_MISMATCH"),
        (
            {
                "match": None,
                "similarity": None,
                "error": ErrorInfo(code=ErrorCode.NO_FACE_IN_REFERENCES, detail="-"),
            },
            "NO_FACE_IN_REFERENCES",
        ),
    ],
)
async def test_no_match_or_a_matcher_error_fails_the_flow(values: dict[str, object], reason: str) -> None:
    notifier = Notifier()
    await matching(notifier)
    await handle_references_matched(answer(notifier, **values), notifier.deps)
    flow = notifier.flows.rows["flow-1"]
    assert flow.outcome == "FAILURE" and flow.decision is not None and reason in flow.decision.reasons


@pytest.mark.parametrize(
    "forged",
    [
        {"request_id": "another-request"},
        {"client_id": "client-2"},
        {"flow_id": "flow-2"},
        # a session's answer, whatever its correlation id says
        {"flow_id": None, "session_id": "session-1"},
    ],
)
async def test_an_answer_to_a_request_the_flow_did_not_send_is_ignored(forged: dict[str, object]) -> None:
    notifier = Notifier()
    await matching(notifier)
    await handle_references_matched(answer(notifier, **forged), notifier.deps)
    assert notifier.flows.rows["flow-1"].status is FlowStatus.MATCHING and deliveries(notifier) == []


async def test_an_answer_to_a_request_sent_before_flow_id_existed_is_taken_by_its_correlation_id() -> None:
    notifier = Notifier()
    await matching(notifier)
    await handle_references_matched(answer(notifier, flow_id=None), notifier.deps)
    assert notifier.flows.rows["flow-1"].outcome == "SUCCESS"


async def test_a_late_answer_after_the_flow_ended_sends_no_second_callback() -> None:
    notifier = Notifier()
    await matching(notifier)
    late = answer(notifier)
    flow = notifier.flows.rows["flow-1"]
    await conclude(notifier.deps, flow, CallbackOutcome.FAILURE, FlowDecision(reasons=["FLOW_TIMEOUT"]))
    await handle_references_matched(late, notifier.deps)
    flow = notifier.flows.rows["flow-1"]
    assert (
        flow.outcome == "FAILURE" and flow.decision is not None and flow.decision.reasons == ["FLOW_TIMEOUT"]
    )
    assert len(deliveries(notifier)) == 1 and len(notifier.audit.records) == 1


def call_failed(session_id: str = "session-1") -> CallFailed:
    return CallFailed(
        correlation_id="flow-1", flow_id="flow-1", session_id=session_id, reason="SOCKET_DROPPED"
    )


async def test_a_room_that_drops_after_the_session_passed_does_not_fail_the_flow() -> None:
    """The session succeeded and the references went to the matcher; the room socket then drops
    during the agent's hang-up. The match decides, not the CallFailed."""
    notifier = Notifier()
    await matching(notifier)
    await handle_call_failed(call_failed(), notifier.deps)
    assert notifier.flows.rows["flow-1"].status is FlowStatus.MATCHING and deliveries(notifier) == []
    await handle_references_matched(answer(notifier), notifier.deps)
    assert notifier.flows.rows["flow-1"].outcome == "SUCCESS" and len(deliveries(notifier)) == 1


async def test_a_call_failed_that_overtakes_the_sessions_ending_leaves_the_decision_to_the_session() -> None:
    notifier = Notifier()
    notifier.flows.add()
    notifier.sessions.add(
        "session-1", SessionStatus.SUCCEEDED, {"isLive": True, "confidence": 97.0, "reasons": []}
    )
    await handle_call_failed(call_failed(), notifier.deps)  # SessionFinished is still on its way
    assert notifier.flows.rows["flow-1"].outcome is None and deliveries(notifier) == []


async def test_a_call_failed_for_another_session_is_ignored_one_for_a_running_session_fails_it() -> None:
    notifier = Notifier()
    notifier.flows.add()
    notifier.sessions.add("session-1", SessionStatus.IN_PROGRESS, None)
    await handle_call_failed(call_failed("session-2"), notifier.deps)
    assert notifier.flows.rows["flow-1"].outcome is None
    await handle_call_failed(call_failed(), notifier.deps)
    flow = notifier.flows.rows["flow-1"]
    assert (
        flow.outcome == "FAILURE" and flow.decision is not None and "SOCKET_DROPPED" in flow.decision.reasons
    )
    assert len(deliveries(notifier)) == 1


async def test_two_endings_racing_on_the_same_read_make_one_callback() -> None:
    notifier = Notifier()
    flow = notifier.flows.add()  # both read the flow before either concluded it
    first = await conclude(notifier.deps, flow, CallbackOutcome.SUCCESS, FlowDecision(is_live=True))
    second = await conclude(
        notifier.deps, flow, CallbackOutcome.FAILURE, FlowDecision(reasons=["FLOW_TIMEOUT"])
    )
    assert (first, second) == (True, False)
    assert notifier.flows.rows["flow-1"].outcome == "SUCCESS"
    assert [delivery.outcome for delivery in deliveries(notifier)] == [CallbackOutcome.SUCCESS]
    assert len(notifier.audit.records) == 1


# --------------------------------------------------------------------------- delivery


async def concluded(notifier: Notifier, **flow: object) -> DeliverCallback:
    notifier.flows.add(**flow)
    notifier.sessions.add(
        "session-1", SessionStatus.FAILED, {"isLive": False, "confidence": 0.2, "reasons": []}
    )
    await handle_session_finished(finished(SessionStatus.FAILED, "NO_FACE"), notifier.deps)
    [delivery] = deliveries(notifier)
    return delivery


async def test_a_delivered_callback_is_reported_once() -> None:
    notifier = Notifier()
    command = await concluded(notifier)
    await handle_deliver_callback(command, notifier.deps)
    await handle_deliver_callback(command, notifier.deps)  # redelivered: no second PUT
    [put] = notifier.controller.puts
    assert put.url == "https://controller.example/cb/failure/tok%2F1" and put.body == b""
    assert put.headers == {DELIVERY_HEADER: "flow-1"}  # the seed's empty body; the repeat's key
    flow = notifier.flows.rows["flow-1"]
    assert (flow.delivery, flow.attempts, flow.status_code) == (DeliveryStatus.DELIVERED, 1, 200)
    [event] = callback_events(notifier)
    assert (event["delivered"], event["attempts"], event["outcome"]) == (True, 1, "FAILURE")


async def test_with_a_secret_the_callback_carries_the_result_and_its_signature() -> None:
    notifier = Notifier(secret="deployment-secret")
    command = await concluded(notifier, callback_secret="flow-secret")  # the flow's own wins
    await handle_deliver_callback(command, notifier.deps)
    [put] = notifier.controller.puts
    body = json.loads(put.body)
    assert body["flowId"] == "flow-1" and body["reasons"] == ["NO_FACE"] and body["isLive"] is False
    assert put.headers[DELIVERY_HEADER] == "flow-1"
    signature = put.headers[SIGNATURE_HEADER]
    timestamp = int(signature.split(",")[0].removeprefix("t="))
    expected = sign(
        "flow-secret", method="PUT", path="/cb/failure/tok%2F1", body=put.body, timestamp=timestamp
    )
    assert signature == expected and abs(timestamp - datetime.now(UTC).timestamp()) < 60


@pytest.mark.parametrize("owner", ["client-1", "client-2"])
async def test_without_a_flow_secret_each_client_signs_with_its_own_key(owner: str) -> None:
    """One deployment-wide key signed for every client: a flow started by one client, with another
    controller's token and path, carried a signature that other controller accepted. Now a
    client's key is derived from the deployment secret and its id; the secret itself signs nothing."""
    notifier = Notifier(secret="deployment-secret")
    command = await concluded(notifier, owner=owner)
    await handle_deliver_callback(command, notifier.deps)
    [put] = notifier.controller.puts
    signature = put.headers[SIGNATURE_HEADER]
    timestamp = int(signature.split(",")[0].removeprefix("t="))

    def signed_with(key: str) -> bool:
        return signature == sign(
            key, method="PUT", path="/cb/failure/tok%2F1", body=put.body, timestamp=timestamp
        )

    others = {"client-1", "client-2"} - {owner}
    assert signed_with(client_callback_key("deployment-secret", owner))
    assert not signed_with("deployment-secret")
    assert not any(signed_with(client_callback_key("deployment-secret", other)) for other in others)


def database_down_for(notifier: Notifier, calls: int) -> None:
    """The next ``calls`` records of a delivery fail as they do while Postgres restarts."""
    record = notifier.flows.mark_delivered
    failures = iter(range(calls))

    async def mark_delivered(*args: object, **kwargs: object) -> object:
        if next(failures, None) is not None:
            raise DatabaseUnavailable("the database system is shutting down")
        return await record(*args, **kwargs)  # type: ignore[arg-type]

    notifier.flows.mark_delivered = mark_delivered  # type: ignore[method-assign]


async def test_a_delivery_recorded_after_the_database_returns_is_sent_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(handlers, "RECORD_RETRY_FIRST_S", 0.01)
    notifier = Notifier()
    command = await concluded(notifier)
    database_down_for(notifier, 3)
    await handle_deliver_callback(command, notifier.deps)
    await sweep(notifier.deps)  # nothing left to resend
    assert len(notifier.controller.puts) == 1
    assert notifier.flows.rows["flow-1"].delivery == DeliveryStatus.DELIVERED
    [event] = callback_events(notifier)
    assert (event["delivered"], event["attempts"]) == (True, 1)


async def test_a_database_down_past_the_lease_leaves_the_attempt_to_the_sweeper(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(handlers, "RECORD_RETRY_FIRST_S", 0.01)
    monkeypatch.setattr(handlers, "RECORD_LEASE_MARGIN_S", notifier_lease_s() - 0.05)
    notifier = Notifier()
    command = await concluded(notifier)
    database_down_for(notifier, 1000)
    with pytest.raises(DatabaseUnavailable):  # the message is retried; it finds the attempt made
        await handle_deliver_callback(command, notifier.deps)
    flow = notifier.flows.rows["flow-1"]
    assert (flow.delivery, flow.attempts) == (DeliveryStatus.PENDING, 1) and callback_events(notifier) == []


def notifier_lease_s() -> float:
    return Notifier().deps.config.lease_s


@pytest.mark.parametrize("failure", [503, 429, UNREACHABLE])
async def test_a_retryable_failure_schedules_the_next_attempt(failure: int | Exception) -> None:
    notifier = Notifier(controller=FakeController(answers=[failure]))
    command = await concluded(notifier)
    await handle_deliver_callback(command, notifier.deps)
    flow = notifier.flows.rows["flow-1"]
    assert (flow.delivery, flow.attempts) == (DeliveryStatus.PENDING, 1)
    assert flow.next_attempt_at is not None and flow.next_attempt_at > datetime.now(UTC)
    assert flow.last_error is not None and callback_events(notifier) == []


@pytest.mark.parametrize(("failure", "error"), [(404, "HTTP 404"), (REFUSED, "link-local")])
async def test_a_permanent_failure_gives_up_at_once_and_dead_letters_the_callback(
    failure: int | Exception, error: str
) -> None:
    notifier = Notifier(controller=FakeController(answers=[failure]))
    command = await concluded(notifier)
    await handle_deliver_callback(command, notifier.deps)
    flow = notifier.flows.rows["flow-1"]
    assert flow.delivery is DeliveryStatus.FAILED and flow.last_error is not None and error in flow.last_error
    [letter] = notifier.sent(DEAD_LETTER_EXCHANGE)
    assert letter.payload["flow_id"] == "flow-1" and letter.headers is not None
    [event] = callback_events(notifier)
    assert (event["delivered"], event["attempts"]) == (False, 1)


async def test_the_last_attempt_gives_up() -> None:
    notifier = Notifier(
        controller=FakeController(answers=[500]),
        retry=RetryPolicy(deadline_s=3600, max_attempts=2, backoff_s=0, backoff_max_s=0),
    )
    first = await concluded(notifier)
    await handle_deliver_callback(first, notifier.deps)
    await handle_deliver_callback(first.model_copy(update={"attempt": 2}), notifier.deps)
    flow = notifier.flows.rows["flow-1"]
    assert flow.delivery is DeliveryStatus.FAILED and "retries exhausted" in (flow.last_error or "")
    assert len(notifier.controller.puts) == 2
    assert [event["delivered"] for event in callback_events(notifier)] == [False]


# --------------------------------------------------------------------------- the sweeper


async def test_the_sweeper_fails_overdue_flows_with_why() -> None:
    notifier = Notifier()
    past = datetime.now(UTC) - timedelta(seconds=1)
    notifier.flows.add(id="never-joined", session_id="s-created", deadline=past)
    live = FlowDecision(is_live=True, confidence=0.93)
    notifier.flows.add(
        id="matching", session_id="s-live", deadline=past, status=FlowStatus.MATCHING, decision=live,
        match_request_id="request-1",
    )  # fmt: skip
    notifier.flows.add(
        id="fetching", session_id="s-live-2", deadline=past, status=FlowStatus.MATCHING, decision=live
    )
    notifier.flows.add(id="still-time", session_id="s-other")
    notifier.sessions.add("s-created", SessionStatus.CREATED, None)
    await sweep(notifier.deps)
    rows = notifier.flows.rows
    assert rows["never-joined"].decision is not None and rows["matching"].decision is not None
    assert rows["never-joined"].decision.reasons == ["NO_VIDEO", "FLOW_TIMEOUT"]
    assert rows["matching"].decision.reasons == ["COMPARISON_UNAVAILABLE", "FLOW_TIMEOUT"]
    assert rows["fetching"].decision is not None
    assert rows["fetching"].decision.reasons == ["REFERENCES_UNAVAILABLE", "FLOW_TIMEOUT"]
    assert rows["still-time"].outcome is None
    assert sorted(delivery.flow_id for delivery in deliveries(notifier)) == [
        "fetching",
        "matching",
        "never-joined",
    ]


async def test_the_sweeper_resends_a_due_attempt_and_leases_it() -> None:
    notifier = Notifier()
    now = datetime.now(UTC)
    notifier.flows.add(
        outcome="SUCCESS",
        status=FlowStatus.SUCCEEDED,
        decision=FlowDecision(is_live=True),
        delivery=DeliveryStatus.PENDING,
        attempts=2,
        next_attempt_at=now - timedelta(seconds=1),
    )
    await sweep(notifier.deps)
    await sweep(notifier.deps)  # leased: not sent again
    [delivery] = deliveries(notifier)
    assert (delivery.attempt, delivery.outcome) == (3, CallbackOutcome.SUCCESS)
    lease = notifier.flows.rows["flow-1"].next_attempt_at
    assert lease is not None and lease > now


async def test_a_resend_the_broker_refuses_waits_for_the_lease_and_the_sweep_goes_on() -> None:
    notifier = Notifier()
    notifier.publisher.down = True
    now = datetime.now(UTC)
    for flow_id in ("a", "b"):
        notifier.flows.add(
            id=flow_id,
            outcome="FAILURE",
            status=FlowStatus.FAILED,
            delivery=DeliveryStatus.PENDING,
            attempts=1,
            next_attempt_at=now - timedelta(seconds=1),
        )
    await sweep(notifier.deps)  # does not raise
    assert deliveries(notifier) == []
    for flow in notifier.flows.rows.values():
        assert flow.delivery is DeliveryStatus.PENDING and flow.next_attempt_at is not None
        assert flow.next_attempt_at >= now + timedelta(seconds=29)  # retried once the lease is over


# --------------------------------------------------------------------------- each client's share


class HeldController(FakeController):
    """A controller of ``slow_host`` that holds every PUT until ``release`` is set."""

    def __init__(self, slow_host: str) -> None:
        super().__init__()
        self.slow_host = slow_host
        self.release = asyncio.Event()

    async def put(self, url: str, body: bytes, headers: dict[str, str]) -> int:
        if self.slow_host in url:
            await self.release.wait()
        return await super().put(url, body, headers)


def pending_flow(notifier: Notifier, flow_id: str, owner: str, host: str) -> DeliverCallback:
    notifier.flows.add(
        id=flow_id,
        owner=owner,
        session_id=f"session-{flow_id}",
        callback_base_url=f"https://{host}/cb/",
        outcome="FAILURE",
        status=FlowStatus.FAILED,
        decision=FlowDecision(is_live=False, reasons=["NO_FACE"]),
        delivery=DeliveryStatus.PENDING,
        next_attempt_at=datetime.now(UTC) + timedelta(seconds=30),
    )
    return DeliverCallback(
        correlation_id=flow_id,
        flow_id=flow_id,
        url=f"https://{host}/cb/failure/tok",
        outcome=CallbackOutcome.FAILURE,
        attempt=1,
    )


async def test_a_client_with_a_slow_controller_holds_only_its_share_of_the_attempts() -> None:
    """Client A's controller holds every PUT: its attempts take its share (one here) and no
    more; its next attempt is put off (no attempt counted) and client B's goes out at once."""
    controller = HeldController("slow.example")
    notifier = Notifier(controller=controller, shares=ClientShares(1))
    a1, a2 = (pending_flow(notifier, f"a{i}", "client-a", "slow.example") for i in (1, 2))
    b1 = pending_flow(notifier, "b1", "client-b", "fast.example")

    held = asyncio.create_task(handle_deliver_callback(a1, notifier.deps))
    await asyncio.sleep(0.01)  # A's first attempt is at its controller
    async with asyncio.timeout(2):  # neither waits for A's controller
        await handle_deliver_callback(a2, notifier.deps)
        await handle_deliver_callback(b1, notifier.deps)

    assert [urlsplit(put.url).hostname for put in controller.puts] == ["fast.example"]
    put_off = notifier.flows.rows["a2"]
    assert (put_off.delivery, put_off.attempts) == (DeliveryStatus.PENDING, 0)  # no attempt spent
    assert put_off.next_attempt_at is not None
    assert put_off.next_attempt_at - datetime.now(UTC) < timedelta(seconds=2)  # soon, not the lease

    controller.release.set()
    await held
    await handle_deliver_callback(a2, notifier.deps)  # the sweeper's resend: A's share is free
    assert {flow_id: notifier.flows.rows[flow_id].delivery for flow_id in ("a1", "a2", "b1")} == {
        "a1": DeliveryStatus.DELIVERED,
        "a2": DeliveryStatus.DELIVERED,
        "b1": DeliveryStatus.DELIVERED,
    }


def fetch_count(outcome: str) -> float:
    return REGISTRY.get_sample_value("faceproof_reference_fetches_total", {"outcome": outcome}) or 0.0


class HeldReferences(FakeReferences):
    """A reference source whose fetches for ``slow_owner`` wait until ``release`` is set."""

    def __init__(self, slow_owner: str) -> None:
        super().__init__()
        self.slow_owner = slow_owner
        self.release = asyncio.Event()
        self.fetched: list[str] = []

    async def fetch(self, flow: CallFlowRecord) -> ReferenceImages:
        self.fetched.append(flow.id)
        if flow.owner == self.slow_owner:
            await self.release.wait()
        return await super().fetch(flow)


async def test_a_client_with_a_slow_reference_list_holds_only_its_share_of_the_fetches() -> None:
    """Client A's reference list never answers: its fetches take its share (one here) and no more;
    its next fetch is put off (the sweeper sends it again) and client B's flow goes to the matcher
    at once."""
    references = HeldReferences("client-a")
    notifier = Notifier(references=references, fetch_shares=ClientShares(1))
    postponed, sent = fetch_count("postponed"), fetch_count("sent")
    for flow_id, owner in (("a1", "client-a"), ("a2", "client-a"), ("b1", "client-b")):
        notifier.flows.add(id=flow_id, owner=owner, session_id=f"s-{flow_id}")
        notifier.sessions.add(f"s-{flow_id}", SessionStatus.SUCCEEDED, LIVE)
        await handle_session_finished(
            finished().model_copy(update={"session_id": f"s-{flow_id}"}), notifier.deps
        )
    a1, a2, b1 = fetches(notifier)
    assert [command.flow_id for command in (a1, a2, b1)] == ["a1", "a2", "b1"]

    held = asyncio.create_task(handle_fetch_references(a1, notifier.deps))
    await asyncio.sleep(0.01)  # A's first fetch waits for its controller
    async with asyncio.timeout(2):  # neither waits for A's controller
        await handle_fetch_references(a2, notifier.deps)
        await handle_fetch_references(b1, notifier.deps)

    assert references.fetched == ["a1", "b1"]
    assert matched(notifier) == ["b1"]
    put_off = notifier.flows.rows["a2"]
    assert put_off.fetching and put_off.next_attempt_at is not None
    assert put_off.next_attempt_at - datetime.now(UTC) < timedelta(seconds=2)  # soon, not the lease
    assert (fetch_count("postponed"), fetch_count("sent")) == (postponed + 1, sent + 1)

    references.release.set()
    await held
    await sweep(notifier.deps)  # not due yet: nothing sent again
    assert len(fetches(notifier)) == 3
    notifier.flows.rows["a2"] = replace(put_off, next_attempt_at=datetime.now(UTC))
    await sweep(notifier.deps)  # due: sent again, and leased
    again = fetches(notifier)[3:]
    assert [command.flow_id for command in again] == ["a2"]
    await handle_fetch_references(again[0], notifier.deps)  # A's share is free now
    assert sorted(matched(notifier)) == ["a1", "a2", "b1"]
    assert all(notifier.flows.rows[flow_id].match_request_id for flow_id in ("a1", "a2", "b1"))


async def test_a_fetch_whose_message_was_lost_is_sent_again_after_its_lease() -> None:
    """The FetchReferences of a flow is in the outbox with the flow's change; should it still never
    be handled (a notifier that died with it, past the broker's redeliveries), the sweeper sends
    it again once its lease is over, and only once per lease."""
    notifier = Notifier()
    notifier.flows.add()
    notifier.sessions.add("session-1", SessionStatus.SUCCEEDED, LIVE)
    await handle_session_finished(finished(), notifier.deps)
    flow = notifier.flows.rows["flow-1"]
    assert flow.fetching and flow.next_attempt_at is not None
    assert flow.next_attempt_at - datetime.now(UTC) > timedelta(seconds=20)  # the lease, not at once
    await sweep(notifier.deps)
    assert len(fetches(notifier)) == 1  # the first one only: its lease is not over
    notifier.flows.rows["flow-1"] = replace(flow, next_attempt_at=datetime.now(UTC) - timedelta(seconds=1))
    await sweep(notifier.deps)
    await sweep(notifier.deps)  # leased again: not sent twice
    assert [command.flow_id for command in fetches(notifier)] == ["flow-1", "flow-1"]
