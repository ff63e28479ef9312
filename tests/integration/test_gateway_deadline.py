"""With no matcher consuming, a compare is answered 504 at its deadline, never left hanging."""

from __future__ import annotations

import base64
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from infra.settings import Settings
from services.gateway.app import create_app
from tests.paths import PEOPLE
from tests.support.broker import temporary_vhost

pytestmark = pytest.mark.integration


def test_compare_without_matcher_times_out_with_504(tmp_path: Path) -> None:
    image = base64.b64encode((PEOPLE / "obama.jpg").read_bytes()).decode()
    with temporary_vhost() as vhost:
        settings = Settings(data_dir=tmp_path, broker_url=vhost.url, compare_timeout_s=1.5, api_token="t")
        with TestClient(create_app(settings, migrate=True)) as client:
            started = time.monotonic()
            response = client.post(
                "/v1/compare", json={"source": image, "target": image}, headers={"Authorization": "Bearer t"}
            )
            elapsed = time.monotonic() - started
    assert response.status_code == 504
    assert response.json()["code"] == "MATCHER_TIMEOUT"
    assert elapsed < 5
