from __future__ import annotations

import asyncio

import pytest

from faceproof.bench.load import check_local_url, drive_load


@pytest.mark.parametrize("url", ["http://127.0.0.1:8000", "http://localhost:8000/", "https://localhost"])
def test_local_urls_are_accepted(url: str) -> None:
    assert check_local_url(url) == url.rstrip("/")


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com",
        "http://10.0.0.1:8000",
        "http://127.0.0.1.example.com",
        "http://0.0.0.0:8000",
        "ftp://127.0.0.1",
        "http://user:secret@127.0.0.1:8000",
        "127.0.0.1:8000",
    ],
)
def test_other_hosts_are_refused(url: str) -> None:
    with pytest.raises(ValueError):
        check_local_url(url)


async def test_load_refuses_a_remote_host_before_sending_anything() -> None:
    with pytest.raises(ValueError, match="only targets"):
        await drive_load(
            "http://example.com", [b"{}"], token=None, concurrency=1, duration_s=1, max_requests=1
        )


async def test_load_is_bounded_in_count_against_a_closed_port() -> None:
    result = await drive_load(
        "http://127.0.0.1:9", [b"{}"], token=None, concurrency=2, duration_s=5, max_requests=3
    )
    assert result.requests == 3
    assert not result.latencies_s
    assert sum(result.errors.values()) == 3


async def test_before_each_takes_turns_with_the_requests_outside_their_time() -> None:
    seen: list[int] = []

    async def before_each(index: int) -> None:
        seen.append(index)
        await asyncio.sleep(0.2)

    result = await drive_load(
        "http://127.0.0.1:9",
        [b"{}", b"[]"],
        token=None,
        concurrency=1,
        duration_s=5,
        max_requests=3,
        before_each=before_each,
    )
    assert seen == [0, 1, 0]  # the index of the body about to be sent, every time
    assert result.requests == 3
    assert result.elapsed_s < 0.2  # its 0.6 s are not the load's


async def test_before_each_needs_a_single_client() -> None:
    async def before_each(index: int) -> None:
        return None

    with pytest.raises(ValueError, match="one client"):
        await drive_load(
            "http://127.0.0.1:9",
            [b"{}"],
            token=None,
            concurrency=2,
            duration_s=1,
            max_requests=2,
            before_each=before_each,
        )
