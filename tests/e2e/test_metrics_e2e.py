"""Every process serves /metrics on its own port (FACEPROOF_METRICS_PORT), the gateway too, and a compare
moves the right counters in the gateway and the matcher; the API port serves no /metrics to anyone."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.e2e.conftest import Stack, image_b64
from tests.e2e.test_compare_e2e import compare
from tests.paths import PEOPLE

pytestmark = pytest.mark.e2e


def value(exposition: str, name: str, **labels: str) -> float:
    """A sample's value in a Prometheus text exposition (0 when absent)."""
    for line in exposition.splitlines():
        match = re.match(rf"^{name}(?:\{{(.*)\}})? (\S+)$", line)
        if match is None:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1) or ""))
        if all(found.get(key) == wanted for key, wanted in labels.items()):
            return float(match.group(2))
    return 0.0


def scrape(url: str) -> str:
    response = httpx.get(url, timeout=10)  # no token: the metrics port is not the API's (not published)
    assert response.status_code == 200
    return response.text


def test_every_process_serves_metrics_and_a_compare_counts(stack: Stack) -> None:
    urls = {name: f"http://127.0.0.1:{port}/metrics" for name, port in stack.metrics_ports.items()}
    gateway = urls.pop("gateway")
    workers = urls
    for name, url in workers.items():
        assert "faceproof_messages_consumed_total" in scrape(url), name
    assert "faceproof_http_requests_total" in scrape(gateway)
    before_gateway, before_matcher = scrape(gateway), scrape(workers["matcher"])

    status, body = compare(stack, image_b64(PEOPLE / "obama.jpg"), image_b64(PEOPLE / "obama2.jpg"))
    assert status == 200, body

    after_gateway, after_matcher = scrape(gateway), scrape(workers["matcher"])
    http = {"method": "POST", "route": "/v1/compare", "status": "200"}
    assert value(after_gateway, "faceproof_http_requests_total", **http) == (
        value(before_gateway, "faceproof_http_requests_total", **http) + 1
    )
    rpc = {"exchange": "faceproof.commands", "routing_key": "compare.faces"}
    assert value(after_gateway, "faceproof_messages_published_total", **rpc) == (
        value(before_gateway, "faceproof_messages_published_total", **rpc) + 1
    )
    queue = {"queue": "matcher.compare-faces"}
    assert value(after_matcher, "faceproof_messages_consumed_total", **queue) == (
        value(before_matcher, "faceproof_messages_consumed_total", **queue) + 1
    )
    for stage in ("detect", "embed"):
        count = "faceproof_inference_duration_seconds_count"
        assert value(after_matcher, count, stage=stage) > value(before_matcher, count, stage=stage), stage


@pytest.mark.parametrize("token", [None, "not-a-key", "e2e-static-token"])
def test_the_api_port_serves_no_metrics(stack: Stack, token: str | None) -> None:
    """The attack: an unauthenticated (or any) caller of the public API port reads no metrics."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = httpx.get(f"{stack.url}/metrics", headers=headers, timeout=10)
    assert response.status_code == 404
    assert "faceproof_" not in response.text


def test_readyz_reveals_only_up_or_down(stack: Stack) -> None:
    """/readyz stays public for load balancers: it names the three dependencies and ok/down, nothing
    about them (no host, URL, version or error text)."""
    response = httpx.get(f"{stack.url}/readyz", timeout=10)
    assert response.status_code == 200
    body = response.json()
    assert body == {"status": "ready", "checks": {"database": "ok", "broker": "ok", "storage": "ok"}}
