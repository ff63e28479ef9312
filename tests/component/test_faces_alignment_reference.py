"""The crop the embedder sees is the alignment its model was trained with (issue 16).

SFace's own alignment is OpenCV's ``FaceRecognizerSF.alignCrop`` (its 112x112 template and
similarity transform); InsightFace's ``face_align.norm_crop`` uses the same ``arcface_dst``.
A wrong template or transform would cost accuracy with no error anywhere, so the pipeline's
crops are held to OpenCV's on real detections.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from faces.alignment import align_face
from tests.faces_support import MODELS_DIR, pipeline, read_image

SFACE_FILE = "face_recognition_sface_2021dec_int8bq_ortfix.onnx"
PHOTOS = [
    "people/obama.jpg",
    "people/biden.jpg",
    "multi/t1.jpg",
    "lfw-devtest/Abdullah_Gul/Abdullah_Gul_0013.jpg",
]


@pytest.fixture(scope="module")
def sface_reference() -> cv2.FaceRecognizerSF:
    return cv2.FaceRecognizerSF.create(str(MODELS_DIR / SFACE_FILE), "")


@pytest.mark.parametrize("photo", PHOTOS)
def test_permissive_crops_match_opencv_sface_align_crop(
    sface_reference: cv2.FaceRecognizerSF, photo: str
) -> None:
    image = read_image(photo)
    located = pipeline("permissive").locate(image)
    assert located
    for detection, crop in located:
        x1, y1, _, _ = detection.box
        face_row = np.array(
            [[x1, y1, detection.width, detection.height, *detection.keypoints.reshape(-1), detection.score]],
            dtype=np.float32,
        )
        reference = sface_reference.alignCrop(image, face_row)
        assert crop.shape == reference.shape == (112, 112, 3)
        # one grey level: OpenCV estimates the transform in float32, we in float64
        assert int(np.abs(crop.astype(np.int16) - reference.astype(np.int16)).max()) <= 1


def test_a_crop_one_pixel_off_is_caught(sface_reference: cv2.FaceRecognizerSF) -> None:
    # The check above can fail: keypoints one source pixel off give a crop far more than one level away.
    image = read_image("people/obama.jpg")
    detection, _ = pipeline("permissive").locate(image)[0]
    x1, y1, _, _ = detection.box
    face_row = np.array(
        [[x1, y1, detection.width, detection.height, *detection.keypoints.reshape(-1), detection.score]],
        dtype=np.float32,
    )
    reference = sface_reference.alignCrop(image, face_row)
    shifted = align_face(image, detection.keypoints + 1.0)
    assert int(np.abs(shifted.astype(np.int16) - reference.astype(np.int16)).max()) > 10
