"""``fetch_models`` against a local mirror directory and an in-memory HTTP server; never the internet."""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path

import httpx
import numpy as np
import pytest
from typer.testing import CliRunner

from faceproof.cli import app as cli
from faces.catalog import MANIFEST_NAME, builtin_catalog
from faces.checksums import file_sha256
from faces.embedding import SfaceEmbedder
from faces.errors import ModelError
from faces.fetch import fetch_models
from faces.packs import load_pack
from faces.runtime import OnnxModel
from tests.faces_support import MODELS_DIR, read_image

MOBILEFACENET_FILES = ["det_500m.onnx", "se_mobilefacenet_arcface_emb256.onnx"]


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


def test_copy_a_pack_from_a_mirror(tmp_path: Path) -> None:
    dest = tmp_path / "models"
    paths = fetch_models(dest, pack="mobilefacenet", from_dir=MODELS_DIR, progress=False)
    assert [p.name for p in paths] == MOBILEFACENET_FILES
    for path in paths:
        assert path.read_bytes() == (MODELS_DIR / path.name).read_bytes()
        assert path.stat().st_mode & 0o777 == 0o644
    assert leftovers(dest) == []
    load_pack("mobilefacenet", dest, threads=1)

    before = {p.name: p.stat().st_mtime_ns for p in paths}
    again = fetch_models(dest, pack="mobilefacenet", from_dir=MODELS_DIR, progress=False)
    assert {p.name: p.stat().st_mtime_ns for p in again} == before  # good files are not copied again


INT8_SFACE = "face_recognition_sface_2021dec_int8bq_ortfix.onnx"
FOLDED_SFACE = "face_recognition_sface_2021dec_int8bq_folded.onnx"


def test_permissive_from_a_mirror_folds_the_int8_sface_to_fp32(tmp_path: Path) -> None:
    paths = fetch_models(tmp_path, pack="permissive", from_dir=MODELS_DIR, progress=False)
    assert [p.name for p in paths] == ["face_detection_yunet_2023mar.onnx", FOLDED_SFACE]
    assert (tmp_path / INT8_SFACE).read_bytes() == (MODELS_DIR / INT8_SFACE).read_bytes()  # kept: the source
    assert file_sha256(paths[1]) == builtin_catalog().get(FOLDED_SFACE).sha256
    assert paths[1].stat().st_mode & 0o777 == 0o644
    assert leftovers(tmp_path) == []

    folded = load_pack("permissive", tmp_path, threads=1)
    assert folded.info.models[-1].file == FOLDED_SFACE
    crops = [
        crop
        for photo in ("people/obama.jpg", "people/biden.jpg", "multi/t1.jpg")
        for _, crop in folded.locate(read_image(photo))
    ]
    assert len(crops) >= 8
    int8 = SfaceEmbedder(OnnxModel(MODELS_DIR / INT8_SFACE, threads=1))
    difference = np.abs(folded.embedder.embed(crops) - int8.embed(crops))
    assert float(difference.max()) < 1e-5

    before = paths[1].stat().st_mtime_ns
    fetch_models(tmp_path, pack="permissive", from_dir=MODELS_DIR, progress=False)
    assert paths[1].stat().st_mtime_ns == before  # a good derived file is not made again


def test_a_derived_file_with_another_checksum_is_rejected(tmp_path: Path) -> None:
    entry = builtin_catalog().get(FOLDED_SFACE).model_dump()
    (tmp_path / MANIFEST_NAME).write_text(json.dumps({"models": [{**entry, "sha256": "0" * 64}]}))
    with pytest.raises(ModelError, match=r"int8bq_folded\.onnx: sha256 .* does not match"):
        fetch_models(tmp_path, pack="permissive", from_dir=MODELS_DIR, progress=False)
    assert not (tmp_path / FOLDED_SFACE).exists()
    assert leftovers(tmp_path) == []


def test_mirror_copy_with_a_wrong_checksum_is_rejected(tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "det_500m.onnx").write_bytes(b"tampered")
    (mirror / "se_mobilefacenet_arcface_emb256.onnx").symlink_to(
        MODELS_DIR / "se_mobilefacenet_arcface_emb256.onnx"
    )
    dest = tmp_path / "models"
    with pytest.raises(ModelError, match=r"det_500m\.onnx: sha256 .* does not match"):
        fetch_models(dest, pack="mobilefacenet", from_dir=mirror, progress=False)
    assert not (dest / "det_500m.onnx").exists()
    assert leftovers(dest) == []


def test_a_bad_file_in_dest_is_replaced(tmp_path: Path) -> None:
    (tmp_path / "det_500m.onnx").write_bytes(b"old and broken")
    fetch_models(tmp_path, pack="mobilefacenet", from_dir=MODELS_DIR, progress=False)
    assert (tmp_path / "det_500m.onnx").read_bytes() == (MODELS_DIR / "det_500m.onnx").read_bytes()


def test_missing_in_the_mirror(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"w600k_mbf\.onnx is not in"):
        fetch_models(tmp_path / "models", pack="buffalo_sc", from_dir=MODELS_DIR, progress=False)


def test_all_files_of_a_mirror(tmp_path: Path) -> None:
    paths = fetch_models(tmp_path, pack=None, from_dir=MODELS_DIR, progress=False)
    names = {p.name for p in paths}
    assert set(MOBILEFACENET_FILES) <= names
    assert "face_detection_yunet_2023mar.onnx" in names and "w600k_r50.onnx" not in names


# --- downloads, served by httpx.MockTransport --------------------------------------------------

DIRECT = b"pretend this is an onnx detector"
MEMBER = b"pretend this is an onnx embedder"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def zipped(members: Mapping[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        for name, data in members.items():
            bundle.writestr(name, data)
    return buffer.getvalue()


ARCHIVE = zipped({"pack/w.onnx": MEMBER, "pack/unused.onnx": b"x"})


def write_manifest(
    dest: Path, *, direct_sha: str = sha(DIRECT), archive_sha: str | None = sha(ARCHIVE)
) -> None:
    entry = {
        "task": "detector",
        "architecture": "scrfd",
        "licence": {"id": "MIT", "text": "test"},
        "commercial_use": True,
        "origin": "test server",
    }
    manifest = {
        "models": [
            {
                **entry,
                "file": "d.onnx",
                "sha256": direct_sha,
                "sources": [{"url": "https://models.test/d.onnx"}],
            },
            {
                **entry,
                "task": "embedder",
                "architecture": "arcface",
                "file": "w.onnx",
                "sha256": sha(MEMBER),
                "sources": [
                    {"url": "https://models.test/pack.zip", "member": "w.onnx", "archive_sha256": archive_sha}
                ],
            },
        ],
        "packs": [
            {
                "name": "test",
                "detector": "d.onnx",
                "embedders": ["w.onnx"],
                "calibration": {"a": 10, "b": -3, "cosine_threshold": 0.3},
                "licence_summary": "test",
                "commercial_use": True,
            }
        ],
    }
    dest.mkdir(exist_ok=True)
    (dest / MANIFEST_NAME).write_text(json.dumps(manifest))


class Server:
    def __init__(self, routes: Mapping[str, bytes]) -> None:
        self.routes = routes
        self.requests: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(str(request.url))
        body = self.routes.get(str(request.url))
        return httpx.Response(200, content=body) if body is not None else httpx.Response(404)

    def client(self) -> httpx.Client:
        return httpx.Client(transport=httpx.MockTransport(self))


def test_download_direct_and_zip_member(tmp_path: Path) -> None:
    write_manifest(tmp_path)
    server = Server({"https://models.test/d.onnx": DIRECT, "https://models.test/pack.zip": ARCHIVE})
    with server.client() as client:
        paths = fetch_models(tmp_path, pack="test", from_dir=None, client=client, progress=False)
        assert [p.read_bytes() for p in paths] == [DIRECT, MEMBER]
        assert not (tmp_path / "unused.onnx").exists()
        assert leftovers(tmp_path) == []
        fetch_models(tmp_path, pack="test", from_dir=None, client=client, progress=False)
    assert len(server.requests) == 2  # the second call found good files and downloaded nothing


def test_download_with_a_wrong_checksum_is_deleted(tmp_path: Path) -> None:
    write_manifest(tmp_path, direct_sha=sha(b"something else"))
    server = Server({"https://models.test/d.onnx": DIRECT, "https://models.test/pack.zip": ARCHIVE})
    with server.client() as client, pytest.raises(ModelError, match=r"d\.onnx: sha256 .* does not match"):
        fetch_models(tmp_path, pack="test", from_dir=None, client=client, progress=False)
    assert not (tmp_path / "d.onnx").exists()
    assert leftovers(tmp_path) == []


def test_archive_with_a_wrong_checksum_is_not_used(tmp_path: Path) -> None:
    write_manifest(tmp_path, archive_sha=sha(b"another zip"))
    server = Server({"https://models.test/d.onnx": DIRECT, "https://models.test/pack.zip": ARCHIVE})
    with server.client() as client, pytest.raises(ModelError, match=r"pack\.zip has sha256"):
        fetch_models(tmp_path, pack="test", from_dir=None, client=client, progress=False)
    assert not (tmp_path / "w.onnx").exists()
    assert sorted(os.listdir(tmp_path)) == ["d.onnx", MANIFEST_NAME]


def test_http_errors_become_model_errors(tmp_path: Path) -> None:
    write_manifest(tmp_path)
    with (
        Server({}).client() as client,
        pytest.raises(ModelError, match=r"download of https://models\.test/d\.onnx failed"),
    ):
        fetch_models(tmp_path, pack="test", from_dir=None, client=client, progress=False)


def test_files_without_a_public_source_need_a_mirror(tmp_path: Path) -> None:
    with Server({}).client() as client, pytest.raises(ModelError, match="no public download"):
        fetch_models(tmp_path, pack="mobilefacenet", from_dir=None, client=client, progress=False)


def test_a_fetch_that_leaves_out_a_file_a_service_needs_fails_before_fetching(tmp_path: Path) -> None:
    """Without a mirror, the liveness worker's files (no public download) were skipped and the fetch
    succeeded: compose's models step passed, the liveness worker never started, and with it the
    retention sweeps. Now the fetch fails first, naming them."""
    mesh = "mediapipe_face_landmark_468.onnx"
    with Server({}).client() as client, pytest.raises(ModelError, match=rf"{mesh}: no public download"):
        fetch_models(tmp_path, pack=None, from_dir=None, client=client, progress=False, required=[mesh])
    assert list(tmp_path.iterdir()) == []  # nothing downloaded

    paths = fetch_models(tmp_path, pack="permissive", from_dir=MODELS_DIR, progress=False, required=[mesh])
    assert (tmp_path / mesh).read_bytes() == (MODELS_DIR / mesh).read_bytes()
    assert paths[-1].name == mesh


def test_the_models_command_without_a_mirror_says_which_files_the_services_would_lack(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["models", "fetch", "--dest", str(tmp_path)])
    assert result.exit_code == 1
    assert "mediapipe_face_landmark_468.onnx" in result.output and "--from DIR" in result.output
    assert list(tmp_path.iterdir()) == []
