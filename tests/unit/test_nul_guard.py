"""NUL characters (which PostgreSQL text and JSONB refuse) are answered 400 INVALID_CHARACTER at the
gateway's edge instead of failing deep in a query (found by tests/integration/test_api_fuzz.py)."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.types import Scope

from infra.settings import Settings
from services.gateway.auth import Principal
from services.gateway.body_rules import BodyRules
from services.gateway.limits import RequestGuard


async def _nobody(_: Scope, __: str | None) -> Principal:
    raise AssertionError("no route here needs an API key")


def _app() -> FastAPI:
    app = FastAPI()

    @app.get("/items/{item}")
    async def read(item: str, q: str = "") -> dict[str, str]:
        return {"item": item, "q": q}

    @app.post("/items")
    async def write(body: dict[str, str]) -> dict[str, str]:
        return body

    app.add_middleware(
        RequestGuard,
        rules=BodyRules(Settings()),
        max_depth=8,
        admit=_nobody,
        body_timeout_s=5,
        max_values=1000,
    )
    return app


def test_nul_in_path_query_or_json_string_is_a_400_problem() -> None:
    with TestClient(_app()) as client:
        for response in (
            client.get("/items/a%00b"),
            client.get("/items/a", params={"q": "x\x00"}),
            client.post("/items", content=rb'{"k": "v\u0000"}', headers={"content-type": "application/json"}),
            client.post("/items", content=rb'{"k": "v\u0000"}', headers={"content-type": "text/plain"}),
        ):
            assert response.status_code == 400, response.text
            assert response.headers["content-type"] == "application/problem+json"
            assert response.json()["code"] == "INVALID_CHARACTER"
        assert client.get("/items/a", params={"q": "%00 as text"}).json()["q"] == "%00 as text"
        assert client.post("/items", json={"k": "\\u0000"}).json() == {"k": "\\u0000"}
