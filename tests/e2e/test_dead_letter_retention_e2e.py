"""Face images do not outlive retention in dead-letter queues (issue 13, item 4), against running
services: an upstream system publishes a refused command with a real face photo on the public
exchange; the photo is then in no dead-letter queue, and with a short dead-letter TTL even the
redacted record (and a worker's raw dead letter) is gone after it."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aio_pika
import pytest

from contracts.public import CommandRejected
from contracts.routing import EVENTS_EXCHANGE, INGRESS_COMMANDS, INGRESS_FACES_COMPARED, EventKey
from tests.e2e.conftest import Stack, _tail, free_port
from tests.e2e.test_public_broker_e2e import Upstream, _next, _own_queue, _publish, upstream
from tests.paths import PEOPLE, REPO_ROOT
from tests.support.broker import RabbitVhost, temporary_vhost

pytestmark = pytest.mark.e2e

__all__ = ["upstream"]  # the fixture, shared with the public broker tests

PHOTO = (PEOPLE / "obama.jpg").read_bytes()
PHOTO_B64 = base64.b64encode(PHOTO).decode()


def _traces(text: str | bytes) -> bool:
    """Whether ``text`` holds any 48-character run of the photo's base64 or 32 bytes of the JPEG."""
    data = text.encode() if isinstance(text, str) else text
    b64_runs = (PHOTO_B64[i : i + 48].encode() for i in range(0, len(PHOTO_B64) - 48, 997))
    raw_runs = (PHOTO[i : i + 32] for i in range(0, len(PHOTO) - 32, 997))
    return any(run in data for run in (*b64_runs, *raw_runs))


def _dead_letter_queues(vhost: RabbitVhost) -> dict[str, dict[str, Any]]:
    """Every ``*.dlq`` of the vhost and its arguments, as RabbitMQ holds them."""
    listing = subprocess.run(
        ["rabbitmqctl", "-q", "list_queues", "-p", vhost.name, "name", "arguments", "--formatter", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    return {
        queue["name"]: {name: value for name, _, value in queue["arguments"]}
        for queue in json.loads(listing)
        if queue["name"].endswith(".dlq")
    }


async def _read_all(url: str, queue: str) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """Every letter in ``queue``, read and left there (unacknowledged until the channel closes)."""
    letters = []
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        dlq = await channel.declare_queue(queue, passive=True)
        while (message := await dlq.get(no_ack=False, fail=False)) is not None:
            letters.append(message)
    return letters


async def _refuse_a_photo(upstream: Upstream) -> tuple[str, bytes]:
    """The attack: a compare command with a face photo, refused (no target); its id and body."""
    body = json.dumps({"source": PHOTO_B64}).encode()
    connection = await aio_pika.connect_robust(upstream.url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        replies = await _own_queue(channel, upstream)
        sent = await _publish(channel, upstream, "compare.faces", body, reply_to=replies.name)
        rejected = CommandRejected.model_validate_json((await _next(replies)).body)
        assert rejected.rejected_message_id == sent and rejected.reason == "INVALID_REQUEST"
    finally:
        await connection.close()
    return sent, body


async def _wait_for_letter(url: str, queue: str, message_id: str) -> aio_pika.abc.AbstractIncomingMessage:
    for _ in range(120):
        for letter in await _read_all(url, queue):
            if letter.message_id == message_id:
                return letter
        await asyncio.sleep(0.25)
    raise AssertionError(f"no dead letter {message_id} in {queue}")


async def test_a_refused_commands_photo_is_in_no_dead_letter_queue(stack: Stack, upstream: Upstream) -> None:
    sent, body = await _refuse_a_photo(upstream)

    record = await _wait_for_letter(stack.vhost.url, INGRESS_COMMANDS.dead_letter_queue, sent)
    headers = record.headers or {}
    assert record.body == b""
    assert headers["x-faceproof-reason"] == "INVALID_REQUEST"
    assert headers["x-faceproof-body-sha256"] == hashlib.sha256(body).hexdigest()
    assert headers["x-faceproof-body-size"] == len(body)

    queues = _dead_letter_queues(stack.vhost)
    assert INGRESS_COMMANDS.dead_letter_queue in queues and len(queues) >= 12
    for name, arguments in queues.items():  # every one bounded: TTL within retention, length, size
        assert 0 < arguments["x-message-ttl"] <= 86_400 * 1000, name
        assert arguments["x-max-length"] > 0 and arguments["x-max-length-bytes"] > 0, name
        assert arguments["x-overflow"] == "drop-head", name
        for letter in await _read_all(stack.vhost.url, name):
            assert not _traces(letter.body), f"the photo is in {name}"
            assert not _traces(json.dumps(letter.headers or {}, default=str)), (
                f"the photo is in {name}'s headers"
            )

    # the operator's tools describe it, and replay leaves it (nothing to run again)
    shown = _cli(stack.env, "dlq", "show", INGRESS_COMMANDS.dead_letter_queue, "--limit", "1000")
    mine = [json.loads(line) for line in shown.splitlines() if sent in line]
    assert mine and mine[0]["redacted"] is True and mine[0]["sha256"] == hashlib.sha256(body).hexdigest()
    assert not _traces(shown)
    replayed = _cli(stack.env, "dlq", "replay", INGRESS_COMMANDS.dead_letter_queue, "--message-id", sent)
    assert sent not in replayed
    await _wait_for_letter(stack.vhost.url, INGRESS_COMMANDS.dead_letter_queue, sent)


def _cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "faceproof", *args],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout


# --------------------------------------------------------------------------- a short dead-letter TTL

TTL_S = 3


@pytest.fixture
def short_ttl_ingress(stack: Stack, tmp_path: Path) -> Iterator[tuple[dict[str, str], RabbitVhost]]:
    """A second ingress process on a vhost of its own (the stack's database and storage), whose
    dead letters live FACEPROOF_DEAD_LETTER_TTL_S=3 seconds."""
    with temporary_vhost() as vhost:
        env = {
            **stack.env,
            "FACEPROOF_BROKER_URL": vhost.url,
            "FACEPROOF_DEAD_LETTER_TTL_S": str(TTL_S),
            "FACEPROOF_METRICS_PORT": str(free_port()),
        }
        log = tmp_path / "ingress.log"
        process = subprocess.Popen(
            [sys.executable, "-m", "faceproof", "worker", "ingress"],
            env=env,
            cwd=REPO_ROOT,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 120
            while INGRESS_COMMANDS.dead_letter_queue not in _dead_letter_queues(vhost):
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"the ingress did not start:\n{_tail(tmp_path)}")
                time.sleep(0.5)
            yield env, vhost
        finally:
            process.terminate()
            process.wait(20)


@pytest.fixture
def short_ttl_upstream(short_ttl_ingress: tuple[dict[str, str], RabbitVhost]) -> Iterator[Upstream]:
    env, vhost = short_ttl_ingress
    name = f"ttl-{uuid.uuid4().hex[:8]}"
    api_key = _cli(env, "keys", "create", name).strip().splitlines()[-1]
    user, password = f"ttl-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    out = _cli(
        env,
        "broker",
        "setup",
        "--user",
        user,
        "--password",
        password,
        "--client",
        name,
        "--vhost",
        vhost.name,
    )
    client_id = out.split("acts for API client ")[1].split()[0]
    yield Upstream(
        user, password, client_id, api_key, f"amqp://{user}:{password}@127.0.0.1:5672/{vhost.name}"
    )
    subprocess.run(["rabbitmqctl", "-q", "delete_user", user], capture_output=True, timeout=60, check=False)


async def _gone(url: str, queue: str, message_id: str, within_s: float) -> float:
    """Seconds until ``message_id`` is no longer in ``queue``."""
    started = time.monotonic()
    while time.monotonic() - started < within_s:
        if all(letter.message_id != message_id for letter in await _read_all(url, queue)):
            return time.monotonic() - started
        await asyncio.sleep(0.25)
    raise AssertionError(f"{message_id} still in {queue} after {within_s} s")


async def test_dead_letters_are_gone_after_a_short_ttl(
    short_ttl_ingress: tuple[dict[str, str], RabbitVhost], short_ttl_upstream: Upstream
) -> None:
    _, vhost = short_ttl_ingress
    assert {arguments["x-message-ttl"] for arguments in _dead_letter_queues(vhost).values()} == {TTL_S * 1000}

    # the redacted record of a refused command expires too
    sent, _ = await _refuse_a_photo(short_ttl_upstream)
    await _wait_for_letter(vhost.url, INGRESS_COMMANDS.dead_letter_queue, sent)
    await _gone(vhost.url, INGRESS_COMMANDS.dead_letter_queue, sent, within_s=TTL_S + 20)

    # a message a worker cannot handle is dead-lettered by RabbitMQ as it came (here an internal
    # event carrying a photo, failed past the delivery limit): it is gone after the TTL as well
    poison = f"poison-{uuid.uuid4().hex[:8]}"
    connection = await aio_pika.connect(vhost.url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        events = await channel.get_exchange(EVENTS_EXCHANGE)
        body = json.dumps({"not": "a FacesCompared", "image": PHOTO_B64}).encode()
        await events.publish(aio_pika.Message(body, message_id=poison), routing_key=EventKey.FACES_COMPARED)
    letter = await _wait_for_letter(vhost.url, INGRESS_FACES_COMPARED.dead_letter_queue, poison)
    assert _traces(letter.body)  # why the TTL matters: this one holds the photo
    await _gone(vhost.url, INGRESS_FACES_COMPARED.dead_letter_queue, poison, within_s=TTL_S + 20)
