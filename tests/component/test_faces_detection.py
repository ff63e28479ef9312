from __future__ import annotations

import cv2
import numpy as np
import pytest

from faces.boxes import Letterbox, letterbox, nms, own_scale
from faces.detection import Detection, Detector, ScrfdDetector, YunetDetector, _detect_at_scales
from faces.runtime import OnnxModel
from tests.faces_support import MODELS_DIR, read_image

DETECTOR_FILES = {"yunet": "face_detection_yunet_2023mar.onnx", "scrfd": "det_500m.onnx"}


@pytest.fixture(scope="module")
def detectors() -> dict[str, Detector]:
    return {
        "yunet": YunetDetector(OnnxModel(MODELS_DIR / DETECTOR_FILES["yunet"], threads=2)),
        "scrfd": ScrfdDetector(OnnxModel(MODELS_DIR / DETECTOR_FILES["scrfd"], threads=2)),
    }


@pytest.mark.parametrize("kind", ["yunet", "scrfd"])
@pytest.mark.parametrize(
    ("photo", "expected"),
    [
        ("multi/t1.jpg", 6),
        ("multi/facenet-pytorch_multiface.jpg", 6),
        ("people/two_people.jpg", 2),
        ("people/knn_test__obama_and_biden.jpg", 3),
        ("people/obama_small.jpg", 1),  # 320x240: scaled up to the input size
        ("people/tests_32bit.png", 1),
        ("negative/facenet-pytorch_noise_1.jpg", 0),
        ("negative/bulk__view.jpg", 0),
        ("negative/facenet_pilatus800.jpg", 0),
        ("negative/crop__no_face.png", 0),
    ],
)
def test_face_counts(detectors: dict[str, Detector], kind: str, photo: str, expected: int) -> None:
    assert len(detectors[kind].detect(read_image(photo))) == expected


@pytest.mark.parametrize("kind", ["yunet", "scrfd"])
def test_cartoon_may_be_detected(detectors: dict[str, Detector], kind: str) -> None:
    assert len(detectors[kind].detect(read_image("negative/bulk__kun_cartoon_crop.jpg"))) <= 1


@pytest.mark.parametrize("kind", ["yunet", "scrfd"])
def test_detections_are_sorted_and_keypoints_sensible(detectors: dict[str, Detector], kind: str) -> None:
    detections = detectors[kind].detect(read_image("multi/t1.jpg"))
    areas = [d.area for d in detections]
    assert areas == sorted(areas, reverse=True)
    for d in detections:
        x1, y1, x2, y2 = d.box
        assert d.keypoints.shape == (5, 2) and d.keypoints.dtype == np.float32
        assert not d.keypoints.flags.writeable
        left_eye, right_eye, nose, left_mouth, right_mouth = d.keypoints
        assert left_eye[0] < right_eye[0] and left_mouth[0] < right_mouth[0]
        assert max(left_eye[1], right_eye[1]) < nose[1] < min(left_mouth[1], right_mouth[1])
        assert np.all((d.keypoints >= [x1, y1]) & (d.keypoints <= [x2, y2]))
        assert 0.0 < d.score <= 1.0


def test_both_detectors_agree_on_one_face(detectors: dict[str, Detector]) -> None:
    image = read_image("people/obama.jpg")
    (a,) = detectors["yunet"].detect(image)
    (b,) = detectors["scrfd"].detect(image)
    assert iou(a.box, b.box) > 0.8
    assert np.abs(a.keypoints - b.keypoints).max() < 0.1 * a.width


def test_source_coordinates_survive_scaling(detectors: dict[str, Detector]) -> None:
    image = read_image("people/obama.jpg")
    big = detectors["yunet"].detect(image)[0]
    half = np.asarray(
        cv2.resize(image, (image.shape[1] // 2, image.shape[0] // 2), interpolation=cv2.INTER_AREA),
        dtype=np.uint8,
    )
    small = detectors["yunet"].detect(half)[0]
    assert iou(big.box, tuple(2 * v for v in small.box)) > 0.85  # type: ignore[arg-type]


def test_min_face_px_drops_small_faces() -> None:
    model = OnnxModel(MODELS_DIR / DETECTOR_FILES["yunet"], threads=1)
    image = read_image("multi/t1.jpg")
    all_faces = YunetDetector(model).detect(image)
    cutoff = sorted(min(d.width, d.height) for d in all_faces)[2] + 0.01
    kept = YunetDetector(model, min_face_px=cutoff).detect(image)
    assert len(kept) == len(all_faces) - 3
    assert all(min(d.width, d.height) >= cutoff for d in kept)


def test_detection_helpers() -> None:
    d = Detection(box=(10.0, 20.0, 40.0, 80.0), score=0.9, keypoints=np.zeros((5, 2), dtype=np.float32))
    assert (d.width, d.height, d.area) == (30.0, 60.0, 1800.0)


def test_nms_keeps_the_best_of_overlapping_boxes() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 9]], dtype=np.float32)
    scores = np.array([0.8, 0.9, 0.5, 0.3], dtype=np.float32)
    assert nms(boxes, scores, 0.4) == [1, 2]
    assert nms(boxes, scores, 0.95) == [1, 0, 2, 3]
    assert nms(np.zeros((0, 4), dtype=np.float32), np.zeros(0, dtype=np.float32), 0.4) == []


def test_letterbox_pads_bottom_right() -> None:
    image = np.full((100, 200, 3), 255, dtype=np.uint8)
    boxed = letterbox(image, 640)
    assert boxed.scale == pytest.approx(3.2)
    assert boxed.canvas.shape == (640, 640, 3)
    assert boxed.canvas[319, 639].min() == 255 and boxed.canvas[321, 0].max() == 0


def iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_own_scale_pads_to_multiples_of_32_and_scales_down_only_past_the_cap() -> None:
    lfw = own_scale(np.full((250, 250, 3), 7, dtype=np.uint8), cap=640)
    assert lfw.scale == 1.0 and lfw.canvas.shape == (256, 256, 3)
    assert lfw.canvas[249, 249].min() == 7 and lfw.canvas[250:].max() == 0 and lfw.canvas[:, 250:].max() == 0
    small = own_scale(np.zeros((250, 200, 3), dtype=np.uint8), cap=640, floor=416)
    assert small.scale == pytest.approx(416 / 250) and small.canvas.shape == (416, 352, 3)
    photo = own_scale(np.zeros((1080, 1920, 3), dtype=np.uint8), cap=640, floor=416)
    assert photo.scale == pytest.approx(1 / 3) and photo.canvas.shape == (384, 640, 3)


def canvases_tried(
    height: int, width: int, *, free: bool, found_at: int | None, floor: int = 0
) -> list[tuple[int, ...]]:
    """The canvas shapes the detection flow tries on an image, the detector finding a face at try N."""
    tried: list[tuple[int, ...]] = []

    def at(boxed: Letterbox) -> list[Detection]:
        tried.append(boxed.canvas.shape[:2])
        face = Detection(box=(0, 0, 30, 30), score=0.9, keypoints=np.zeros((5, 2), np.float32))
        return [face] if found_at == len(tried) else []

    _detect_at_scales(np.zeros((height, width, 3), dtype=np.uint8), 640, floor, free, at)
    return tried


def test_the_square_letterbox_is_tried_only_when_the_own_scale_finds_nothing_in_a_small_image() -> None:
    assert canvases_tried(250, 250, free=True, found_at=1) == [(256, 256)]
    assert canvases_tried(250, 250, free=True, found_at=None) == [(256, 256), (640, 640)]
    assert canvases_tried(250, 250, free=True, found_at=2) == [(256, 256), (640, 640)]
    # a large image: the letterbox would have the same scale, so it is not tried again
    assert canvases_tried(1080, 1920, free=True, found_at=None) == [(384, 640)]
    assert canvases_tried(250, 250, free=False, found_at=None) == [(640, 640)]  # a fixed-size model
    # YuNet's floor: a small image is scaled up to 416 first
    assert canvases_tried(250, 250, free=True, found_at=1, floor=416) == [(416, 416)]
    assert canvases_tried(250, 200, free=True, found_at=None, floor=416) == [(416, 352), (640, 640)]
    assert canvases_tried(500, 500, free=True, found_at=1, floor=416) == [(512, 512)]


@pytest.mark.parametrize("kind", ["yunet", "scrfd"])
def test_lfw_faces_at_their_own_scale_match_the_640_letterbox(kind: str) -> None:
    free = {
        "yunet": YunetDetector(OnnxModel(MODELS_DIR / DETECTOR_FILES["yunet"], free_spatial_dims=True)),
        "scrfd": ScrfdDetector(OnnxModel(MODELS_DIR / DETECTOR_FILES["scrfd"])),
    }[kind]
    assert free.free_size
    for photo in ("lfw-devtest/AJ_Lamas/AJ_Lamas_0001.jpg", "people/obama_small.jpg"):
        image = read_image(photo)
        own = free._detect(own_scale(image, cap=640, floor=free.min_input))
        square = free._detect(letterbox(image, 640))
        assert own and square
        assert iou(own[0].box, square[0].box) > 0.8
        # the same points, to within a tenth of the face (the two scales see different pixels)
        assert np.abs(own[0].keypoints - square[0].keypoints).max() < 0.1 * square[0].width
