"""Telemetry pieces without servers: labels, ids from messages, route templates, the exporter
setting, and the Grafana dashboard's queries against the metrics that exist."""

from __future__ import annotations

import json
import re

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client import generate_latest

from infra.settings import Settings
from infra.telemetry import http as http_telemetry
from infra.telemetry.broker import message_ids
from infra.telemetry.metrics import METRIC_NAMES, REGISTRY, queue_label
from infra.telemetry.tracing import TracingUnavailable, _exporter
from tests.paths import REPO_ROOT

DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "faceproof.json"
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def test_message_ids_come_from_the_envelope_only() -> None:
    body = (
        b'{"message_id":"m1","correlation_id":"flow-1","session_id":"abc123","image":"' + b"A" * 5000 + b'"}'
    )
    assert message_ids(body) == {"correlation_id": "flow-1", "session_id": "abc123"}
    assert message_ids(b'{"token": "secret", "x": 1}') == {}
    assert message_ids(b"\xff\xfe not json") == {}


def test_a_per_process_queue_is_one_label() -> None:
    assert queue_label("call-agent.session-events.0123456789ab") == "call-agent.session-events"
    assert queue_label("matcher.compare-faces") == "matcher.compare-faces"


def test_http_metrics_use_the_route_template_not_the_path() -> None:
    app = FastAPI()

    @app.get("/things/{thing_id}")
    async def thing(thing_id: str) -> dict[str, str]:
        return {"id": thing_id}

    http_telemetry.install(app)
    labels = {"method": "GET", "route": "/things/{thing_id}", "status": "200"}
    before = REGISTRY.get_sample_value("faceproof_http_requests_total", labels) or 0.0
    with TestClient(app) as client:
        response = client.get("/things/secret-id-1", headers={"X-Request-ID": "caller-request-0001"})
        assert client.get("/nowhere").status_code == 404
        assert client.get("/metrics").status_code == 404  # not on the API's port (its own port)
    exposition = generate_latest(REGISTRY).decode()
    assert response.headers["X-Request-ID"] == "caller-request-0001"
    assert REGISTRY.get_sample_value("faceproof_http_requests_total", labels) == before + 1
    assert "secret-id-1" not in exposition
    assert 'route="unmatched",status="404"' in exposition


def test_otlp_without_its_package_is_a_clear_startup_error() -> None:
    try:
        import opentelemetry.exporter.otlp.proto.http  # noqa: F401
    except ImportError:
        with pytest.raises(TracingUnavailable, match="opentelemetry-exporter-otlp-proto-http"):
            _exporter(Settings(tracing_exporter="otlp"))
    else:
        pytest.skip("the OTLP exporter is installed here")
    assert _exporter(Settings(tracing_exporter="none")) is None


def _dashboard_metrics() -> set[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    names: set[str] = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            names.update(re.findall(r"\bfaceproof_[a-z_]+", target["expr"]))
    return names


def test_every_metric_in_the_dashboard_exists() -> None:
    registered = {
        sample.name
        for family in REGISTRY.collect()
        for sample in family.samples
        if sample.name.startswith("faceproof_")
    } | {family.name for family in REGISTRY.collect() if family.name.startswith("faceproof_")}
    for name in _dashboard_metrics():
        family = next((name.removesuffix(s) for s in HISTOGRAM_SUFFIXES if name.endswith(s)), name)
        assert family in METRIC_NAMES or name in METRIC_NAMES, name
        assert family in registered or name in registered or family.removesuffix("_total") in registered, name


def test_the_dashboard_draws_every_metric() -> None:
    used = {
        next((name.removesuffix(s) for s in HISTOGRAM_SUFFIXES if name.endswith(s)), name)
        for name in _dashboard_metrics()
    }
    assert used >= METRIC_NAMES, sorted(METRIC_NAMES - used)
