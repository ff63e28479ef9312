"""docs/asyncapi.json and docs/openapi.json are what the code generates (they cannot drift)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from faceproof.apidocs import ASYNCAPI_PATH, OPENAPI_PATH, asyncapi_document, openapi_document, render

FIX = "the document is out of date: run `faceproof docs generate` and commit the result"


@pytest.mark.parametrize(
    ("path", "build"),
    [(ASYNCAPI_PATH, asyncapi_document), (OPENAPI_PATH, openapi_document)],
    ids=["asyncapi", "openapi"],
)
def test_the_checked_in_document_matches_the_code(path: Path, build: Callable[[], dict[str, Any]]) -> None:
    assert path.exists(), FIX
    generated = render(build())
    assert path.read_text() == generated, FIX


def test_asyncapi_lists_every_consumed_queue_and_the_published_events() -> None:
    from contracts.routing import ALL_ROUTES

    text = render(asyncapi_document())
    for route in ALL_ROUTES:
        assert f'"name": "{route.queue}"' in text, route.queue
    for message in ("FacesCompared", "SessionFinished", "CallbackDelivered", "FrameCaptured"):
        assert message in text


def test_openapi_has_the_api_and_not_the_metrics_endpoint() -> None:
    paths = openapi_document()["paths"]
    assert "/v1/compare" in paths and "/v1/sessions/{session_id}" in paths
    assert "/metrics" not in paths
