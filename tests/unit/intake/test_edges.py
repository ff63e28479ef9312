"""Each door translates intake errors once: problem+json over HTTP, CommandRejected (or a retry)
on the broker. The same refusal reads the same at both."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fastapi import FastAPI

from contracts.commands import CompareFaces
from contracts.envelope import Event
from infra.db.ingress import BrokerClient, CommandStatus
from infra.settings import Settings
from services.gateway.problems import MEDIA_TYPE, install_problem_handlers
from services.ingress.envelope import Envelope, Rejected
from services.ingress.handlers import CommandDeps, handle_command
from services.intake import errors
from services.intake.calls import CallStarter
from services.intake.sessions import SessionCreator
from tests.unit.intake.fakes import FakeCallCommands, FakeFailures, FakeFlows, FakeSessions, FakeStore, jpeg

REFUSALS = [
    (errors.InvalidInput("INVALID_IMAGE", "Invalid image", "'source' is not an image."), 400),
    (errors.TooLarge("IMAGE_TOO_MANY_PIXELS", "Image too large", "'source' has too many pixels."), 413),
    (errors.Refused("ROOM_REFUSED", "Room refused", "The room URL (ws_url) is refused."), 422),
    (errors.LockedOut("SUBJECT_LOCKED_OUT", "Subject locked out", "retry in 42 s.", retry_after_s=42), 429),
    (errors.Unavailable("STORAGE_UNAVAILABLE", "Service unavailable", "down.", retry_after_s=5), 503),
]


@pytest.mark.parametrize(("error", "status"), REFUSALS)
async def test_the_gateway_answers_an_intake_error_as_problem_json(
    error: errors.IntakeError, status: int
) -> None:
    app = FastAPI()
    install_problem_handlers(app)

    @app.get("/refuse")
    async def refuse() -> None:
        raise error

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        response = await client.get("/refuse")
    assert response.status_code == status
    assert response.headers["content-type"] == MEDIA_TYPE
    assert response.json() == {
        "type": "about:blank",
        "title": error.title,
        "status": status,
        "detail": error.detail,
        "code": error.code,
    }
    expected = None if error.retry_after_s is None else str(error.retry_after_s)
    assert response.headers.get("retry-after") == expected


# --------------------------------------------------------------------------- the broker ingress


class Identities:
    async def client_for(self, user_name: str) -> BrokerClient | None:
        return BrokerClient(client_id="client-1", rate_per_second=10, burst=10, monthly_quota=1000)


@dataclass
class Processed:
    finished: list[CommandStatus] = field(default_factory=list)

    async def claim(self, client_id: str, message_id: str, command: str, *, redelivered: bool) -> bool:
        return True

    async def finish(self, client_id: str, message_id: str, status: CommandStatus) -> None:
        self.finished.append(status)


@dataclass
class Outbox:
    sent: list[Event] = field(default_factory=list)

    async def compare(self, command: CompareFaces, *, reply_to: str | None, correlation_id: str) -> None:
        self.sent.append(command)  # type: ignore[arg-type]

    async def reply(self, event: Event, *, reply_to: str, correlation_id: str) -> None:
        self.sent.append(event)

    async def public(self, event: Event, *, client_id: str, key: str) -> None:
        self.sent.append(event)


def _deps(processed: Processed, *, store: FakeStore | None = None, locked: bool = False) -> CommandDeps:
    settings = Settings()
    sessions = FakeSessions()
    failures = FakeFailures(until=datetime.now(UTC) + timedelta(seconds=60) if locked else None)
    return CommandDeps(
        settings=settings,
        identities=Identities(),
        processed=processed,
        limiter=None,
        sessions=SessionCreator(settings, sessions, store or FakeStore(), failures),
        calls=CallStarter(settings, sessions, FakeFlows(), FakeCallCommands()),
        outbox=Outbox(),
    )


def _envelope(command: str) -> Envelope:
    return Envelope(command=command, message_id="m-1", correlation_id=None, reply_to=None, user_id="upstream")


async def test_the_ingress_rejects_a_locked_out_subject_with_the_http_code() -> None:
    processed = Processed()
    body = json.dumps({"settings": {"subjectKey": "alice"}}).encode()
    with pytest.raises(Rejected) as rejected:
        await handle_command(
            _envelope("session.start"), body, redelivered=False, deps=_deps(processed, locked=True)
        )
    assert rejected.value.reason == "SUBJECT_LOCKED_OUT" and rejected.value.client_id == "client-1"
    assert processed.finished == [CommandStatus.REJECTED]


async def test_the_ingress_rejects_a_private_room_with_the_http_code() -> None:
    body = json.dumps(
        {"ws_url": "ws://169.254.169.254/", "callback_base_url": "https://c.example/", "token": "t"}
    ).encode()
    with pytest.raises(Rejected) as rejected:
        await handle_command(_envelope("call.join"), body, redelivered=False, deps=_deps(Processed()))
    assert rejected.value.reason == "ROOM_REFUSED"


async def test_the_ingress_retries_when_the_store_is_down() -> None:
    processed = Processed()
    body = json.dumps({"reference": base64.b64encode(jpeg()).decode()}).encode()
    with pytest.raises(errors.Unavailable):  # nacked and redelivered, not rejected
        await handle_command(
            _envelope("session.start"),
            body,
            redelivered=False,
            deps=_deps(processed, store=FakeStore(down=True)),
        )
    assert processed.finished == []
