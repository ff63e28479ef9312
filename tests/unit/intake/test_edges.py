"""Each door translates intake errors once: problem+json over HTTP, CommandRejected (or a retry)
on the broker. The same refusal reads the same at both."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fastapi import FastAPI

from infra.db.ingress import CommandStatus
from services.gateway.problems import MEDIA_TYPE, install_problem_handlers
from services.ingress.envelope import Envelope, Rejected
from services.ingress.handlers import CommandDeps, handle_command
from services.intake import errors
from tests.unit.ingress.fakes import FakeProcessed, Ingress
from tests.unit.intake.fakes import FakeFailures, FakeStore, jpeg

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


def _deps(processed: FakeProcessed, *, store: FakeStore | None = None, locked: bool = False) -> CommandDeps:
    until = datetime.now(UTC) + timedelta(seconds=60) if locked else None
    return Ingress(processed=processed, store=store or FakeStore(), failures=FakeFailures(until=until)).deps


def _envelope(command: str) -> Envelope:
    return Envelope(command=command, message_id="m-1", correlation_id=None, reply_to=None, user_id="upstream")


async def test_the_ingress_rejects_a_locked_out_subject_with_the_http_code() -> None:
    processed = FakeProcessed()
    body = json.dumps({"settings": {"subjectKey": "alice"}}).encode()
    with pytest.raises(Rejected) as rejected:
        await handle_command(
            _envelope("session.start"), body, redelivered=False, deps=_deps(processed, locked=True)
        )
    assert rejected.value.reason == "SUBJECT_LOCKED_OUT" and rejected.value.client_id == "client-1"
    assert list(processed.rows.values()) == [CommandStatus.REJECTED]


async def test_the_ingress_rejects_a_private_room_with_the_http_code() -> None:
    body = json.dumps(
        {"ws_url": "ws://169.254.169.254/", "callback_base_url": "https://c.example/", "token": "t"}
    ).encode()
    with pytest.raises(Rejected) as rejected:
        await handle_command(_envelope("call.join"), body, redelivered=False, deps=_deps(FakeProcessed()))
    assert rejected.value.reason == "ROOM_REFUSED"


async def test_the_ingress_retries_when_the_store_is_down() -> None:
    processed = FakeProcessed()
    body = json.dumps({"reference": base64.b64encode(jpeg()).decode()}).encode()
    with pytest.raises(errors.Unavailable):  # nacked and redelivered, not rejected
        await handle_command(
            _envelope("session.start"),
            body,
            redelivered=False,
            deps=_deps(processed, store=FakeStore(down=True)),
        )
    assert list(processed.rows.values()) == [CommandStatus.RUNNING]  # taken again on redelivery
