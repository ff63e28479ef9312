"""Property-based fuzzing of the HTTP API from its own OpenAPI document (schemathesis).

The in-process gateway (``create_app``) runs on a fresh Postgres database, a throw-away RabbitMQ
vhost and a local-directory store, with **no workers**: compares and verifies time out after 1 s
(504 ``MATCHER_TIMEOUT``), offers and calls find no call agent (503/504). Every request carries the
static token. Each operation gets a few examples of schema-valid and schema-invalid input; the one
property checked is that the server never fails: no 5xx except the documented 503 and 504.
Bounded: ``MAX_EXAMPLES`` per operation, no shrinking, no example database.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis import Case
from schemathesis.python.asgi import shutdown_lifespans

from infra.settings import Settings
from services.gateway.app import create_app
from tests.integration.conftest import migrate
from tests.support import services
from tests.support.broker import temporary_vhost

pytestmark = pytest.mark.integration

TOKEN = "fuzz-static-token"
MAX_EXAMPLES = 25
#: Answers that are part of the contract when nothing consumes: no matcher (504), no call agent
#: (503/504), object store unavailable (503). Anything else from 500 up is a bug.
DOCUMENTED_5XX = frozenset({503, 504})


#: The document comes from the app itself (building it needs no resources); the app under test is
#: the fixture's, started by schemathesis' ASGI client on first use.
schema = schemathesis.openapi.from_dict(create_app(Settings(api_token=TOKEN)).openapi())


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    services.require_url(services.postgres_url(), "PostgreSQL", 5432)
    database_url = asyncio.run(services.create_test_database())
    try:
        asyncio.run(migrate(database_url))
        with temporary_vhost() as vhost:
            data = tmp_path_factory.mktemp("fuzz")
            config = Settings(
                data_dir=data,
                database_url=database_url,
                broker_url=vhost.url,
                storage_url=Path(data / "objects").as_uri(),
                api_token=TOKEN,
                public_url="http://127.0.0.1:8000",
                compare_timeout_s=1.0,
                offer_timeout_s=1.0,
                fetch_timeout_s=1.0,
                rate_limits=False,  # the fuzzer is one client sending fast; limits are tested elsewhere
            )
            try:
                yield create_app(config)
            finally:
                shutdown_lifespans()
    finally:
        asyncio.run(services.drop_test_database(database_url))


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
def test_no_server_errors(case: Case[Any], gateway: Any) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    response = case.call(app=gateway, headers=headers, timeout=30)
    status = response.status_code
    assert status < 500 or status in DOCUMENTED_5XX, (
        f"{case.method} {case.formatted_path} -> {status}: {response.text[:500]}\n"
        f"reproduce: {case.as_curl_command(headers=headers)}"
    )
    if status >= 400:  # every refusal is a problem document (or FastAPI's own 404/405 JSON)
        content_type = (response.headers.get("content-type") or [""])[0]
        assert content_type.startswith(("application/problem+json", "application/json")), (
            f"{case.method} {case.formatted_path} -> {status} as {content_type!r}"
        )
