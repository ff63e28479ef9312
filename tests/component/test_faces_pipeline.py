from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from faces.catalog import MANIFEST_NAME, load_catalog
from faces.checksums import sha256_file
from faces.errors import ModelError
from faces.packs import BUILTIN_PACKS, DEFAULT_PACK, get_pack, list_packs, load_pack
from faces.pipeline import FacePipeline
from tests.faces_support import MODELS_DIR, pipeline, read_image

PACKS = ["permissive", "mobilefacenet"]


@pytest.fixture(scope="module", params=PACKS)
def loaded(request: pytest.FixtureRequest) -> FacePipeline:
    return pipeline(request.param)


def embedding_of(pipe: FacePipeline, photo: str) -> np.ndarray:
    faces = pipe.analyze(read_image(photo), max_faces=1)
    assert len(faces) == 1
    return faces[0].embedding


@pytest.mark.parametrize(
    ("photo_a", "photo_b", "same"),
    [
        ("people/obama.jpg", "people/obama2.jpg", True),
        ("people/biden.jpg", "people/knn_train__biden__biden2.jpg", True),
        ("people/obama.jpg", "people/biden.jpg", False),
        ("people/obama2.jpg", "people/knn_train__biden__biden2.jpg", False),
    ],
)
def test_same_and_different_people(loaded: FacePipeline, photo_a: str, photo_b: str, same: bool) -> None:
    cos, similarity = loaded.compare_embeddings(embedding_of(loaded, photo_a), embedding_of(loaded, photo_b))
    assert loaded.is_match(cos) is same
    assert (cos >= loaded.cosine_threshold) is same
    assert (similarity >= loaded.calibration.threshold) is same
    assert 0.0 <= similarity <= 1.0


def test_analyze_returns_normalised_embeddings_largest_first(loaded: FacePipeline) -> None:
    faces = loaded.analyze(read_image("multi/t1.jpg"))
    assert len(faces) == 6
    areas = [face.detection.area for face in faces]
    assert areas == sorted(areas, reverse=True)
    matrix = np.stack([face.embedding for face in faces])
    assert matrix.shape == (6, loaded.info.embedding_dimension)
    assert matrix.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(matrix, axis=1), 1.0, atol=1e-5)
    assert not faces[0].embedding.flags.writeable
    assert [f.detection for f in loaded.analyze(read_image("multi/t1.jpg"), max_faces=2)] == [
        f.detection for f in faces[:2]
    ]
    assert loaded.analyze(read_image("negative/bulk__view.jpg")) == []


def test_batched_and_single_embeddings_agree(loaded: FacePipeline) -> None:
    from faces.alignment import align_face

    image = read_image("people/two_people.jpg")
    crops = [align_face(image, d.keypoints) for d in loaded.detector.detect(image)]
    together = loaded.embedder.embed(crops)
    apart = np.concatenate([loaded.embedder.embed([crop]) for crop in crops])
    np.testing.assert_allclose(together, apart, atol=1e-4)
    assert loaded.embedder.embed([]).shape == (0, loaded.embedder.dimension)


def test_analyze_rejects_non_bgr_arrays(loaded: FacePipeline) -> None:
    with pytest.raises(ValueError):
        loaded.analyze(np.zeros((10, 10), dtype=np.uint8))


def test_info_and_warm_up() -> None:
    permissive = pipeline("permissive")
    permissive.warm_up()
    info = permissive.info.as_dict()
    assert info["pack"] == "permissive" and info["commercial_use"] is True
    assert info["embedding_dimension"] == 128
    catalog = load_catalog()
    for model in info["models"]:
        assert model["sha256"] == catalog.get(model["file"]).sha256
    assert {m["licence"] for m in info["models"]} == {"MIT", "Apache-2.0"}
    assert "CPUExecutionProvider" in info["providers"]
    mobile = pipeline("mobilefacenet").info
    assert mobile.commercial_use is False and mobile.embedding_dimension == 256
    assert "research" in mobile.licence_summary


def test_builtin_packs() -> None:
    assert DEFAULT_PACK == "permissive"
    assert set(BUILTIN_PACKS) == {"permissive", "mobilefacenet", "buffalo_sc", "buffalo_l"}
    assert [p.name for p in BUILTIN_PACKS.values() if p.commercial_use] == ["permissive"]
    catalog = load_catalog()
    for pack in BUILTIN_PACKS.values():
        assert catalog.get(pack.detector).task == "detector"
        for file in pack.embedders:
            entry = catalog.get(file)
            assert entry.task == "embedder"
            assert entry.commercial_use or not pack.commercial_use


def test_unknown_pack() -> None:
    with pytest.raises(ModelError, match="unknown model pack 'nope'; known packs: buffalo_l"):
        get_pack("nope")


def link_models(target: Path, files: list[str]) -> Path:
    target.mkdir(exist_ok=True)
    for file in files:
        (target / file).symlink_to(MODELS_DIR / file)
    return target


def test_missing_file_names_it_and_the_fetch_command(tmp_path: Path) -> None:
    models = link_models(tmp_path / "models", ["face_detection_yunet_2023mar.onnx"])
    with pytest.raises(ModelError) as error:
        load_pack("permissive", models)
    message = str(error.value)
    assert (
        "face_recognition_sface_2021dec.onnx or face_recognition_sface_2021dec_int8bq_folded.onnx"
        " or face_recognition_sface_2021dec_int8bq_ortfix.onnx" in message
    )
    assert "faceproof models fetch --pack permissive" in message and "--from DIR" in message

    with pytest.raises(ModelError, match=r"needs det_10g\.onnx.*fetch --pack buffalo_l"):
        load_pack("buffalo_l", models)


def test_checksum_mismatch_is_refused(tmp_path: Path) -> None:
    models = link_models(tmp_path, ["face_recognition_sface_2021dec_int8bq_ortfix.onnx"])
    damaged = bytearray((MODELS_DIR / "face_detection_yunet_2023mar.onnx").read_bytes())
    damaged[-1] ^= 0xFF
    (models / "face_detection_yunet_2023mar.onnx").write_bytes(bytes(damaged))
    with pytest.raises(ModelError, match="sha256"):
        load_pack("permissive", models)


def test_manifest_plugs_in_an_own_model_and_pack(tmp_path: Path) -> None:
    models = link_models(tmp_path, ["det_500m.onnx"])
    shutil.copy(MODELS_DIR / "se_mobilefacenet_arcface_emb256.onnx", models / "my_embedder.onnx")
    manifest = {
        "models": [
            {
                "file": "my_embedder.onnx",
                "task": "embedder",
                "architecture": "mobilefacenet",
                "sha256": sha256_file(models / "my_embedder.onnx"),
                "licence": {"id": "LicenseRef-Mine", "text": "ours"},
                "commercial_use": True,
                "origin": "trained in-house",
            }
        ],
        "packs": [
            {
                "name": "mine",
                "detector": "det_500m.onnx",
                "embedders": ["my_embedder.onnx"],
                "calibration": {"a": 15.0, "b": -4.0, "cosine_threshold": 0.3},
                "licence_summary": "in-house embedder, SCRFD non-commercial",
                "commercial_use": False,
            }
        ],
    }
    (models / MANIFEST_NAME).write_text(json.dumps(manifest))
    assert "mine" in [p.name for p in list_packs(models)]
    mine = load_pack("mine", models, threads=1)
    assert mine.info.pack == "mine" and mine.info.calibrated is False
    assert mine.info.models[1].licence == "LicenseRef-Mine"
    assert len(mine.analyze(read_image("people/obama_small.jpg"))) == 1

    (models / MANIFEST_NAME).write_text('{"models": [{"file": "x.onnx"}]}')
    with pytest.raises(ModelError, match="not a valid model manifest"):
        load_pack("mine", models)
