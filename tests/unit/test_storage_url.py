"""open_store picks the adapter from the URL and keeps secrets out of reprs and errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.storage import LocalObjectStore, S3ObjectStore, open_store


def test_file_url_and_plain_paths_are_local(tmp_path: Path) -> None:
    assert isinstance(store := open_store(tmp_path.as_uri()), LocalObjectStore)
    assert store.root == tmp_path
    assert isinstance(store := open_store(str(tmp_path / "objects")), LocalObjectStore)
    assert store.root == tmp_path / "objects"
    assert isinstance(store := open_store("relative/objects"), LocalObjectStore)
    assert store.root == Path.cwd() / "relative/objects"


@pytest.mark.parametrize(
    ("url", "endpoint", "secure", "region"),
    [
        (
            "s3://AK:SK@127.0.0.1:8333/frames?secure=false&region=eu-west-1",
            "127.0.0.1:8333",
            False,
            "eu-west-1",
        ),
        ("s3://AK:SK@s3.example.com/frames", "s3.example.com", True, "us-east-1"),
        ("http://AK:SK@minio:9000/frames", "minio:9000", False, "us-east-1"),
        ("https://AK:SK@minio:9000/frames/", "minio:9000", True, "us-east-1"),
        ("http://AK:SK@[::1]:8333/frames", "[::1]:8333", False, "us-east-1"),
    ],
)
def test_s3_urls(url: str, endpoint: str, secure: bool, region: str) -> None:
    store = open_store(url)
    assert isinstance(store, S3ObjectStore)
    assert (store.endpoint, store.bucket, store.secure, store.region) == (endpoint, "frames", secure, region)
    assert "SK" not in repr(store)


def test_percent_encoded_secret_is_hidden() -> None:
    # Decoding is exercised against SeaweedFS, whose test secret contains "/" and "+".
    store = open_store("s3://AK:p%2Fss%40word@host:9000/bucket?secure=false")
    assert "p/ss@word" not in repr(store) and "p%2Fss" not in repr(store)


@pytest.mark.parametrize(
    "url",
    [
        "ftp://AK:topsecret@host/bucket",
        "s3://host:9000/bucket",
        "s3://AK@host:9000/bucket",
        "s3://AK:topsecret@host:9000/",
        "s3://AK:topsecret@host:9000/bucket/nested",
        "s3://AK:topsecret@host:9000/bucket?secure=maybe",
        "s3://AK:topsecret@host:notaport/bucket",
        "file://remotehost/srv/objects",
        "s3://AK:topsecret@host:9000/bucket?public=ftp://files.example.com",
        "s3://AK:topsecret@host:9000/bucket?public=https://files.example.com/bucket",
        "s3://AK:topsecret@host:9000/bucket?public=https://u:p@files.example.com",
        "s3://AK:topsecret@host:9000/bucket?public=https://files.example.com:x",
    ],
)
def test_bad_urls_raise_value_error_without_secrets(url: str) -> None:
    with pytest.raises(ValueError) as raised:
        open_store(url)
    assert "topsecret" not in str(raised.value)
