"""Starting a call flow (services/intake/calls.py) against in-memory ports."""

from __future__ import annotations

import pytest

from contracts.http import CallSettings, JoinCallRequest
from contracts.languages import choose_language
from infra.db.errors import DatabaseUnavailable
from infra.settings import Settings
from services.intake import errors
from services.intake.caller import Caller
from services.intake.calls import FLOW_MARGIN_S, CallStarter
from tests.unit.intake.fakes import FakeCallCommands, FakeFlows, FakeSessions

SETTINGS = Settings()
CALLER = Caller(owner="client-1", client_id="client-1")


def request(ws_url: str = "wss://rooms.example/room/1", lang: str = "es-MX") -> JoinCallRequest:
    return JoinCallRequest(
        ws_url=ws_url, callback_base_url="https://controller.example/cb/", token="controller-token", lang=lang
    )


async def test_a_call_stores_its_session_and_flow_then_sends_join_call() -> None:
    sessions, flows, commands = FakeSessions(), FakeFlows(), FakeCallCommands()
    starter = CallStarter(SETTINGS, sessions, flows, commands)
    created = await starter.start(request(), CallSettings(session_timeout_s=60), CALLER)
    assert (created.language, created.language_fallback) == ("es", False)
    session = sessions.rows[created.session_id]
    assert session.kind == "call" and session.settings.language == "es"
    flow = flows.rows[created.flow_id]
    assert (
        flow.session_id == session.id
        and flow.settings.timeout_s is not None
        and flow.settings.timeout_s >= 60 + FLOW_MARGIN_S
    )
    [command] = commands.sent
    assert (command.flow_id, command.session_id, command.client_id) == (flow.id, session.id, "client-1")
    assert command.language == "es" and command.expires_at == session.expires_at
    assert command.settings == session.settings.to_row() and command.token == "controller-token"


async def test_an_unknown_language_falls_back_to_english_and_says_so() -> None:
    created = await CallStarter(SETTINGS, FakeSessions(), FakeFlows(), FakeCallCommands()).start(
        request(lang="tlh"), CallSettings(), CALLER
    )
    assert (created.language, created.requested_language, created.language_fallback) == ("en", "tlh", True)


@pytest.mark.parametrize(
    "ws_url", ["ws://169.254.169.254/latest", "ws://10.0.0.8:4443/room", "wss://user:pw@rooms.example/room"]
)
async def test_a_room_the_address_policy_refuses_is_refused_before_anything_is_stored(ws_url: str) -> None:
    sessions, flows, commands = FakeSessions(), FakeFlows(), FakeCallCommands()
    with pytest.raises(errors.Refused) as refused:
        await CallStarter(SETTINGS, sessions, flows, commands).start(request(ws_url), CallSettings(), CALLER)
    assert refused.value.code == "ROOM_REFUSED" and "ws_url" in refused.value.detail
    assert sessions.rows == {} and flows.rows == {} and commands.sent == []


async def test_the_broker_down_is_retryable_and_the_flow_stays_for_its_deadline() -> None:
    flows = FakeFlows()
    with pytest.raises(errors.Unavailable) as refused:
        await CallStarter(SETTINGS, FakeSessions(), flows, FakeCallCommands(down=True)).start(
            request(), CallSettings(), CALLER
        )
    assert refused.value.code == "BROKER_UNAVAILABLE" and refused.value.retryable
    assert len(flows.rows) == 1  # its deadline ends it with one failure callback
    [flow] = flows.rows.values()
    assert flow.join_sent_at is None  # a redelivered call.join asks then (CallStarter.resume)


class UnrecordedFlows(FakeFlows):
    async def claim_join(self, flow_id: str) -> bool:
        raise DatabaseUnavailable("the database went away before the ask")


async def test_an_ask_that_cannot_be_claimed_is_not_sent_and_the_flow_stays_for_its_deadline() -> None:
    commands, flows = FakeCallCommands(), UnrecordedFlows()
    with pytest.raises(DatabaseUnavailable):
        await CallStarter(SETTINGS, FakeSessions(), flows, commands).start(request(), CallSettings(), CALLER)
    assert commands.sent == []  # no agent asked while the ask is unrecorded: no second one later
    assert len(flows.rows) == 1


async def test_a_redelivered_start_never_asks_a_second_agent() -> None:
    """A redelivered ``call.join`` (its first delivery asked, then failed to answer) finds the ask
    taken: one JoinCall, one agent in the room."""
    sessions, flows, commands = FakeSessions(), FakeFlows(), FakeCallCommands()
    starter = CallStarter(SETTINGS, sessions, flows, commands)
    flow = await starter.create(request(), CallSettings(), CALLER, flow_id="flow-1")
    await starter.resume(request(), CALLER, flow)
    [stored] = flows.rows.values()
    await starter.resume(request(), CALLER, flow)  # the same stale record, as a redelivery reads it
    await starter.resume(request(), CALLER, stored)
    assert [command.flow_id for command in commands.sent] == ["flow-1"]


@pytest.mark.parametrize(
    ("asked", "chosen"),
    [
        ("es", ("es", False)),
        ("pt-BR", ("pt", False)),
        ("PT_br", ("pt", False)),
        ("xx", ("en", True)),
        ("", ("en", True)),
    ],
)
def test_language_tags_and_the_fallback_rule(asked: str, chosen: tuple[str, bool]) -> None:
    assert choose_language(asked) == chosen


def test_every_url_a_flow_keeps_or_calls_fits_or_the_request_is_refused() -> None:
    """A base URL over its column (once normalised: 340 é are 2,040 characters escaped) and a
    token whose callback URL would be over the URL limit are refused when the call is asked for;
    the longest accepted callback URL is one the notifier's DeliverCallback carries (before, such a
    flow was stored and then never called back: the command could not be built)."""
    from pydantic import ValidationError

    from contracts.commands import DeliverCallback
    from contracts.http import MAX_CALLBACK_URL_LENGTH, callback_url
    from contracts.values import CallbackOutcome

    def join(base: str, token: str, datastore: str | None = None) -> JoinCallRequest:
        return JoinCallRequest(
            ws_url="wss://rooms.example/r", callback_base_url=base, datastore_base_url=datastore, token=token
        )

    with pytest.raises(ValidationError, match="callback_base_url is over 2048 characters once normalised"):
        join("https://controller.example/" + "é" * 340, "t")
    with pytest.raises(ValidationError, match="datastore_base_url is over 2048"):
        join("https://controller.example", "t", datastore="https://store.example/" + "é" * 340)
    with pytest.raises(ValidationError, match=r"the callback URL .* is over 2083 characters"):
        join("https://controller.example", "é" * 512)  # 512 characters, 3,072 once escaped
    token = "a" * 512  # the longest token
    path = "b" * (
        MAX_CALLBACK_URL_LENGTH - len("https://controller.example/") - len("/failure/") - len(token)
    )
    fits = join(f"https://controller.example/{path}/", token)
    url = callback_url(str(fits.callback_base_url), CallbackOutcome.FAILURE, fits.token)
    assert len(url) == MAX_CALLBACK_URL_LENGTH
    DeliverCallback(correlation_id="f", flow_id="f", url=url, outcome=CallbackOutcome.FAILURE)
    with pytest.raises(ValidationError, match="the callback URL"):
        join(f"https://controller.example/{path}b/", token)
