"""A throw-away RabbitMQ virtual host per test run, so runs never share queues."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import aio_pika
import pytest

from contracts.routing import EVENTS_EXCHANGE

BASE_URL = "amqp://guest:guest@127.0.0.1:5672"


@dataclass(frozen=True)
class RabbitVhost:
    name: str

    @property
    def url(self) -> str:
        return f"{BASE_URL}/{self.name}"


def _ctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


@contextmanager
def temporary_vhost() -> Iterator[RabbitVhost]:
    if shutil.which("rabbitmqctl") is None:
        pytest.fail("rabbitmqctl is needed to create a test virtual host (is RabbitMQ installed?)")
    vhost = RabbitVhost(f"faceproof-test-{uuid.uuid4().hex[:10]}")
    _ctl("add_vhost", vhost.name)
    try:
        _ctl("set_permissions", "-p", vhost.name, "guest", ".*", ".*", ".*")
        yield vhost
    finally:
        _ctl("delete_vhost", vhost.name)


async def bind_event_queue(vhost_url: str, queue_name: str, routing_key: str) -> None:
    """A durable queue on faceproof's events exchange that keeps ``routing_key`` events for a test."""
    connection = await aio_pika.connect(vhost_url)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(EVENTS_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)
        queue = await channel.declare_queue(queue_name, durable=True)
        await queue.bind(exchange, routing_key=routing_key)


async def drain_queue(vhost_url: str, queue_name: str) -> list[dict[str, Any]]:
    """Every message waiting in the queue, as JSON, removed from it."""
    connection = await aio_pika.connect(vhost_url)
    bodies: list[dict[str, Any]] = []
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(queue_name)
        while (message := await queue.get(fail=False, no_ack=True)) is not None:
            bodies.append(json.loads(message.body))
    return bodies


async def session_events(
    vhost_url: str, queue_name: str, session_id: str, *, wait_s: float = 15.0
) -> list[dict[str, Any]]:
    """The session's events that reach the queue (drained): an outbox relay publishes them after
    the commit, so wait for the first, then a little longer for a (wrong) second one."""
    loop = asyncio.get_running_loop()

    async def mine() -> list[dict[str, Any]]:
        events = await drain_queue(vhost_url, queue_name)
        return [e for e in events if e.get("session_id", e.get("sessionId")) == session_id]

    found: list[dict[str, Any]] = []
    deadline = loop.time() + wait_s
    while not found and loop.time() < deadline:
        found += await mine()
        await asyncio.sleep(0.2)
    await asyncio.sleep(1.5)
    return found + await mine()
