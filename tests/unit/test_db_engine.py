"""URL normalisation and SQLite connection settings."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from infra.db.engine import create_engine, normalise_url, ping
from infra.db.keys import hash_key, key_prefix, keys_match, new_key


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgres://u:p@h:5432/db", "postgresql+asyncpg://u:p@h:5432/db"),
        ("postgresql://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("postgresql+asyncpg://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("sqlite:////var/lib/faceproof.db", "sqlite+aiosqlite:////var/lib/faceproof.db"),
        ("sqlite+aiosqlite:///rel.db", "sqlite+aiosqlite:///rel.db"),
    ],
)
def test_normalise_url(url: str, expected: str) -> None:
    assert normalise_url(url) == expected


@pytest.mark.parametrize(
    "url", ["mysql://u:topsecret@h/db", "postgresql+psycopg2://u:topsecret@h/db", "nonsense"]
)
def test_unsupported_urls(url: str) -> None:
    with pytest.raises(ValueError) as raised:
        normalise_url(url)
    assert "topsecret" not in str(raised.value)


async def test_sqlite_engine_creates_its_directory_and_sets_pragmas(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'a' / 'b' / 'x.db'}")
    try:
        await ping(engine)
        async with engine.connect() as connection:
            pragmas = [
                (await connection.execute(text(f"PRAGMA {name}"))).scalar()
                for name in ("journal_mode", "foreign_keys", "busy_timeout")
            ]
    finally:
        await engine.dispose()
    assert (tmp_path / "a" / "b" / "x.db").is_file()
    assert pragmas[0] == "wal" and pragmas[1] == 1 and pragmas[2] >= 1000


def test_api_keys() -> None:
    key = new_key()
    assert key.startswith("fp_") and len(key) == 46 and new_key() != key
    assert key_prefix(key) == key[:12]
    assert keys_match(key, hash_key(key)) and not keys_match(key + "x", hash_key(key))
