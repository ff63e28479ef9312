"""Integration fixtures: real SeaweedFS (started once per session), PostgreSQL (a fresh database per
session) and SQLite (a temporary file), both migrated. Every test here is marked ``integration``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from faceproof.testing.mediasoup_room import MediasoupRoom
from faceproof.testing.scripted_subject import Media
from infra.db.engine import create_engine
from infra.db.migrate import upgrade_async
from infra.storage import ObjectStore, open_store
from tests.paths import DATA_DIR
from tests.support import services
from tests.support.rooms import room_server  # noqa: F401 - the fixture, shared with tests/e2e
from tests.support.services import SeaweedFS

_HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(_HERE):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    server = services.start_seaweedfs(tmp_path_factory.mktemp("seaweedfs"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
async def s3_store(seaweedfs: SeaweedFS) -> ObjectStore:
    store = open_store(seaweedfs.url)
    await store.ensure_buckets()
    return store


async def migrate(url: str) -> None:
    engine = create_engine(url)
    try:
        await upgrade_async(engine)
    finally:
        await engine.dispose()


@pytest.fixture(scope="session")
async def postgres_url() -> AsyncIterator[str]:
    """A fresh, migrated PostgreSQL database for this session, dropped at the end."""
    services.require_url(services.postgres_url(), "PostgreSQL", 5432)
    async with services.fresh_postgres_database() as url:
        await migrate(url)
        yield url


@pytest.fixture(scope="session")
async def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('sqlite') / 'faceproof.db'}"
    await migrate(url)
    return url


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> str:
    """Each test using it runs on both backends."""
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


@pytest.fixture(scope="module")
def media() -> Media:
    """A room subject's camera: a real face video (8 fps), looped."""
    return Media.from_path(DATA_DIR / "video" / "liveportrait_d3.mp4", max_seconds=4.0)


@pytest.fixture
async def room(room_server: None) -> AsyncIterator[MediasoupRoom]:  # noqa: F811 - the fixture above
    """A real mediasoup room server of its own (a room waiting for resumeConsumer, with leaveRoom)."""
    async with MediasoupRoom() as running:
        yield running
