"""Telemetry on the real message path: one compare is one trace (gateway -> RabbitMQ -> matcher),
it moves the right counters, log lines carry its ids and never the token; a message that keeps
failing is counted as dead-lettered when RabbitMQ dead-letters it."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aio_pika
import pytest
from fastapi.testclient import TestClient
from faststream.rabbit import RabbitBroker
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client import generate_latest

from contracts.routing import MATCHER_COMPARE, Route
from faces.packs import load_pack
from infra.broker import COMMANDS, create_broker, declare_topology, queue_for
from infra.logs import JsonFormatter
from infra.settings import Settings
from infra.storage import open_store
from infra.telemetry.context import LogContext
from infra.telemetry.metrics import REGISTRY
from infra.telemetry.tracing import setup_tracing
from services.gateway.app import create_app
from services.matcher.adapters import OnnxFaceEngine, StoredImages
from services.matcher.main import build_app as build_matcher
from tests.paths import MODELS_DIR, PEOPLE
from tests.support.broker import RabbitVhost, temporary_vhost

TOKEN = "telemetry-test-token-5f1c2a"


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture(scope="module")
def spans() -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    setup_tracing(Settings(), "tests", processor=SimpleSpanProcessor(exporter))
    return exporter


@pytest.fixture(scope="module")
def vhost() -> Iterator[RabbitVhost]:
    with temporary_vhost() as created:
        yield created


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """Every log line as the services write it (JSON, with the log context), DEBUG included."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(LogContext())
    root, broker = logging.getLogger(), logging.getLogger("faceproof.broker")
    previous = root.level, broker.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    broker.setLevel(logging.DEBUG)  # a line per message received/processed
    yield out
    root.removeHandler(handler)
    root.setLevel(previous[0])
    broker.setLevel(previous[1])


@pytest.fixture
async def matcher(vhost: RabbitVhost, tmp_path: Path) -> AsyncIterator[Settings]:
    settings = Settings(
        data_dir=tmp_path, broker_url=vhost.url, api_token=TOKEN, models_dir=MODELS_DIR, prefer_gpu=False
    )
    pipeline = await asyncio.to_thread(
        load_pack, settings.model_pack, MODELS_DIR, prefer_gpu=False, threads=1
    )
    engine = OnnxFaceEngine(pipeline, max_pixels=40_000_000, workers=1, batch_size=4, batch_wait_s=0.002)
    store = open_store(settings.resolved_storage_url)
    broker = build_matcher(settings, engine=engine, images=StoredImages(store)).broker
    assert isinstance(broker, RabbitBroker)
    await broker.connect()
    await declare_topology(broker, (MATCHER_COMPARE,), delivery_limit=3)
    await broker.start()
    yield settings
    await broker.stop()
    await engine.close()


def _one(spans: list[ReadableSpan], kind: SpanKind, name_part: str) -> ReadableSpan:
    found = [span for span in spans if span.kind is kind and name_part in span.name]
    assert found, f"no {kind.name} span named *{name_part}*: {[s.name for s in spans]}"
    return found[-1]


async def test_a_compare_is_one_trace_and_moves_the_counters(
    matcher: Settings, spans: InMemorySpanExporter, log_lines: io.StringIO
) -> None:
    image = base64.b64encode((PEOPLE / "obama.jpg").read_bytes()).decode()
    labels = {"method": "POST", "route": "/v1/compare", "status": "200"}
    before = {
        "http": sample("faceproof_http_requests_total", **labels),
        "consumed": sample("faceproof_messages_consumed_total", queue="matcher.compare-faces"),
        "rpc": sample(
            "faceproof_messages_published_total", exchange="faceproof.commands", routing_key="compare.faces"
        ),
        "reply": sample("faceproof_messages_published_total", exchange="default", routing_key="reply"),
        "embed": sample("faceproof_inference_duration_seconds_count", stage="embed"),
        "batch": sample("faceproof_inference_batch_size_count", stage="embed"),
        "handler": sample("faceproof_handler_duration_seconds_count", queue="matcher.compare-faces"),
    }
    spans.clear()

    def call() -> tuple[int, dict[str, str], str]:
        with TestClient(create_app(matcher, migrate=True)) as client:
            response = client.post(
                "/v1/compare",
                json={"source": image, "target": image},
                headers={"Authorization": f"Bearer {TOKEN}"},
            )
            assert client.get("/metrics").status_code == 404  # on its own port, not the API's
            return response.status_code, dict(response.headers), generate_latest(REGISTRY).decode()

    status, headers, exposition = await asyncio.to_thread(call)
    assert status == 200
    request_id = headers["x-request-id"]

    # the gateway's metrics (on FACEPROOF_METRICS_PORT) show the request (route template, not raw path)
    assert 'faceproof_http_requests_total{method="POST",route="/v1/compare",status="200"}' in exposition
    assert sample("faceproof_http_requests_total", **labels) == before["http"] + 1
    assert (
        sample("faceproof_messages_consumed_total", queue="matcher.compare-faces") == before["consumed"] + 1
    )
    assert (
        sample(
            "faceproof_messages_published_total", exchange="faceproof.commands", routing_key="compare.faces"
        )
        == before["rpc"] + 1
    )
    assert sample("faceproof_messages_published_total", exchange="default", routing_key="reply") >= (
        before["reply"] + 1
    )
    assert sample("faceproof_inference_duration_seconds_count", stage="embed") > before["embed"]
    assert sample("faceproof_inference_batch_size_count", stage="embed") > before["batch"]
    assert sample("faceproof_handler_duration_seconds_count", queue="matcher.compare-faces") == (
        before["handler"] + 1
    )

    # one trace: the gateway's request span and the matcher's handler span
    finished = list(spans.get_finished_spans())
    request = _one(finished, SpanKind.SERVER, "POST /v1/compare")
    handler = _one(finished, SpanKind.CONSUMER, "compare.faces process")
    assert handler.context.trace_id == request.context.trace_id
    assert request.attributes is not None and request.attributes["http.route"] == "/v1/compare"

    # the gateway's access line carries the request and trace ids; no line carries the token
    text = log_lines.getvalue()
    assert TOKEN not in text
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    trace_id = format(request.context.trace_id, "032x")
    access = [line for line in lines if line["logger"] == "faceproof.http" and "/v1/compare" in line["msg"]]
    assert access, "no access line for the compare"
    assert access[0]["request_id"] == request_id and access[0]["trace_id"] == trace_id


async def _dead_letter(url: str, queue: str) -> aio_pika.abc.AbstractIncomingMessage | None:
    connection = await aio_pika.connect(url)
    async with connection:
        dlq = await (await connection.channel()).get_queue(queue)
        for _ in range(120):
            message = await dlq.get(no_ack=True, fail=False)
            if message is not None:
                return message
            await asyncio.sleep(0.25)
    return None


DOOMED = Route("telemetry-test.doomed", "faceproof.commands", "telemetry.doomed")


async def test_a_message_failing_every_delivery_is_counted_dead_lettered(
    vhost: RabbitVhost, spans: InMemorySpanExporter, log_lines: io.StringIO
) -> None:
    settings = Settings(broker_url=vhost.url, delivery_limit=1)
    broker = create_broker(settings)
    attempts: list[int] = []

    @broker.subscriber(queue_for(DOOMED, delivery_limit=1), COMMANDS)
    async def always_fails(body: dict[str, str]) -> None:
        attempts.append(1)
        logging.getLogger("faceproof.test").warning("attempt %d", len(attempts))
        raise RuntimeError("cannot process")

    failed = sample("faceproof_messages_failed_total", queue=DOOMED.queue, error="RuntimeError")
    dead = sample("faceproof_messages_dead_lettered_total", queue=DOOMED.queue)
    await broker.connect()
    await declare_topology(broker, (DOOMED,), delivery_limit=1)
    await broker.start()
    try:
        await broker.publish(
            {"correlation_id": "doomed-1", "session_id": "session-doomed-1"},
            exchange=COMMANDS,
            routing_key=DOOMED.routing_key,
        )
        message = await _dead_letter(vhost.url, DOOMED.dead_letter_queue)
        assert message is not None, "RabbitMQ never dead-lettered the message"
    finally:
        await broker.stop()
    assert len(attempts) == 2  # the first delivery and one redelivery (delivery_limit=1)
    assert sample("faceproof_messages_failed_total", queue=DOOMED.queue, error="RuntimeError") == failed + 2
    assert sample("faceproof_messages_dead_lettered_total", queue=DOOMED.queue) == dead + 1
    # a handler's log lines carry the message's ids and the trace id of its span
    lines = [json.loads(line) for line in log_lines.getvalue().splitlines() if line.startswith("{")]
    handler_lines = [line for line in lines if line["logger"] == "faceproof.test"]
    assert len(handler_lines) == 2
    assert all(line["session_id"] == "session-doomed-1" for line in handler_lines)
    assert all(line["correlation_id"] == "doomed-1" and len(line["trace_id"]) == 32 for line in handler_lines)
