"""The log setup's redaction: whichever logger writes a URL, a token or credentials, the line that
reaches stderr keeps none of it."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator

import httpx
import pytest

from infra.logs import configure_logging, redact

TOKEN = "controller-token-7f3a"


@pytest.fixture
def logs(capsys: pytest.CaptureFixture[str]) -> Iterator[pytest.CaptureFixture[str]]:
    """The services' log setup (configure_logging is called in the test: pytest resets the root
    level after each setup phase), restored afterwards."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    levels = {name: logging.getLogger(name).level for name in ("httpx", "httpcore")}
    yield capsys
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, str]]:
    return [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]


def test_httpx_logs_warnings_only(logs: pytest.CaptureFixture[str]) -> None:
    configure_logging("DEBUG", "test")
    assert logging.getLogger("httpx").getEffectiveLevel() == logging.WARNING
    assert logging.getLogger("httpcore").getEffectiveLevel() == logging.WARNING


async def test_a_request_url_logged_by_httpx_at_info_keeps_no_path(logs: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", "test")
    # Even with httpx turned back up to INFO (an operator's debugging), the handler redacts.
    logging.getLogger("httpx").setLevel(logging.INFO)
    transport = httpx.MockTransport(lambda request: httpx.Response(200))
    async with httpx.AsyncClient(transport=transport) as client:
        await client.put(f"https://controller.example:9000/cb/success/{TOKEN}?sig=abc", content=b"{}")
    [line] = [line for line in lines(logs) if line["logger"] == "httpx"]
    assert line["msg"].startswith("HTTP Request: PUT https://controller.example:9000/[redacted]")
    assert TOKEN not in line["msg"] and "/cb/" not in line["msg"] and "sig=" not in line["msg"]


def test_any_logger_and_any_argument_is_redacted(logs: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", "test")
    log = logging.getLogger("faceproof.test")
    log.info("fetching %s", f"http://10.0.0.5/images/{TOKEN}.jpg")
    log.warning("storage s3://AKIAEXAMPLE:se%2Fcret@127.0.0.1:8333/bucket?secure=false unreachable")
    log.info("header Authorization: Bearer %s, then token=%s&x=1", TOKEN, TOKEN)
    log.info("reference data:image/jpeg;base64,/9j/4AAQSkZJRgABAQ== refused")
    text = "\n".join(line["msg"] for line in lines(logs))
    for secret in (TOKEN, "/images/", "AKIAEXAMPLE", "se%2Fcret", "/9j/4AAQ", "bucket"):
        assert secret not in text
    assert "http://10.0.0.5/[redacted]" in text and "s3://[redacted]" in text
    assert "Bearer [redacted]" in text and "token=[redacted]" in text and "data:[redacted]" in text


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ("listening on http://127.0.0.1:8000", "listening on http://127.0.0.1:8000"),
        ("ws://[::1]:4443/?roomId=r&peerId=p", "ws://[::1]:4443/[redacted]"),
        ("10.0.0.1 resolves to a private address", "10.0.0.1 resolves to a private address"),
        ("flow 5f0c callback delivered (attempt 1)", "flow 5f0c callback delivered (attempt 1)"),
    ],
)
def test_what_redaction_keeps(text: str, kept: str) -> None:
    assert redact(text) == kept


def test_redaction_is_linear_on_hostile_lines() -> None:
    for hostile in ("a://" * 200_000, "data:" * 100_000, "Bearer " * 100_000, "xtoken=" * 100_000):
        started = time.perf_counter()
        redact(hostile)
        assert time.perf_counter() - started < 5.0
