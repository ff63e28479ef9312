"""Face mesh, head pose, eyes and mouth measured on real photos (../shared/data/faces)."""

from __future__ import annotations

import functools

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from faceproof.testing.annotate import read_frames
from services.liveness.analysis import FrameAnalysis, FrameAnalyzer
from services.liveness.landmarks import CropRegion, region_from_box
from services.liveness.measures import FaceMeasures
from tests.faces_support import read_image
from tests.paths import DATA_DIR, MODELS_DIR

Image = npt.NDArray[np.uint8]


@functools.cache
def analyzer() -> FrameAnalyzer:
    return FrameAnalyzer.from_models_dir(MODELS_DIR, threads=2, detect_every=1, use_antispoof=False)


def analyze(image: Image) -> FrameAnalysis:
    analysis = analyzer().analyze(image, force_detect=True)
    return analysis


def measures_of(image: Image) -> FaceMeasures:
    analysis = analyze(image)
    assert analysis.face_count == 1
    assert analysis.measures is not None
    return analysis.measures


def photo(name: str) -> FaceMeasures:
    return measures_of(read_image(name))


def video_frame(video: str, t: float) -> Image:
    _, frame = next(read_frames(DATA_DIR / "video" / video, t, t))
    return frame


def test_mesh_points_land_on_the_face() -> None:
    image = read_image("people/obama.jpg")
    analysis = analyze(image)
    assert analysis.landmarks is not None and analysis.landmarks.shape == (468, 3)
    assert analysis.presence is not None and analysis.presence > 0.99
    assert analysis.box is not None and analysis.keypoints is not None
    detection = analyzer().detector.detect(image)[0]
    # the mesh's eye centres, nose and mouth corners are where the detector put its keypoints
    error = np.linalg.norm(analysis.keypoints - detection.keypoints, axis=1)
    assert float(error.max()) < 0.08 * detection.width
    assert analysis.inside_frame and analysis.frame_overflow == 0.0
    assert 0.2 < analysis.relative_size < 0.5  # a 240x330 box in a 910x1137 photo


def test_turned_heads_have_opposite_yaw() -> None:
    # pose__left_face looks toward the image's left (the subject's right): negative yaw
    left = photo("conditions/pose__left_face.jpeg").pose
    right = photo("conditions/pose__right_face.png").pose
    frontal = photo("people/obama.jpg").pose
    assert left.yaw < -20.0
    assert right.yaw > 20.0
    assert abs(frontal.yaw) < 8.0 and abs(frontal.pitch) < 8.0 and abs(frontal.roll) < 5.0


def test_looking_up_and_down_have_opposite_pitch() -> None:
    up = photo("conditions/pose__rise_face.jpeg").pose
    down = photo("conditions/pose__lower_face.jpeg").pose
    assert up.pitch > 15.0
    assert down.pitch < -15.0


def test_tilted_heads_have_opposite_roll() -> None:
    # left_wryneck: the head leans toward the subject's right shoulder (clockwise when mirrored)
    assert photo("conditions/pose__left_wryneck.png").pose.roll > 20.0
    assert photo("conditions/pose__right_wryneck.png").pose.roll < -20.0


def test_closed_eyes_have_a_low_eye_aspect_ratio() -> None:
    closed = photo("conditions/reaction__close_eyes.jpeg")
    opened = photo("conditions/reaction__open_eyes.png")
    assert max(closed.ear_right, closed.ear_left) < 0.15
    assert min(opened.ear_right, opened.ear_left) > 0.25
    assert closed.ear < 0.5 * opened.ear
    # one eye closed: the subject's right eye (the image's left)
    wink = photo("conditions/reaction__close_open_eyes.jpeg")
    assert wink.ear_right < 0.15 < 0.25 < wink.ear_left


def test_open_mouth_and_smile() -> None:
    # the same person in one video: mouth closed at 3.0 s, wide open ("oh") at 10.6 s
    closed = measures_of(video_frame("liveportrait_d3.mp4", 3.0))
    opened = measures_of(video_frame("liveportrait_d3.mp4", 10.6))
    assert closed.mar < 0.1
    assert opened.mar > 0.35
    # a broad smile widens the mouth relative to the eyes
    assert (
        photo("conditions/emotion__happy.png").mouth_width
        > photo("conditions/emotion__sad.png").mouth_width + 0.15
    )


def test_mirroring_the_frame_mirrors_the_measures() -> None:
    image = read_image("conditions/Tom_Hanks_54745.png")  # turned about 25 degrees
    plain = measures_of(image)
    mirrored = measures_of(np.ascontiguousarray(image[:, ::-1]))
    assert plain.pose.yaw > 15.0
    assert mirrored.pose.yaw == pytest.approx(-plain.pose.yaw, abs=5.0)
    assert mirrored.pose.roll == pytest.approx(-plain.pose.roll, abs=4.0)
    assert mirrored.nose[0] == pytest.approx(1.0 - plain.nose[0], abs=0.01)
    assert mirrored.nose_mirrored == pytest.approx(plain.nose, abs=0.01)


@pytest.mark.parametrize("angle", [-30.0, 30.0])
def test_in_plane_rotation_changes_roll_only(angle: float) -> None:
    image = read_image("people/obama.jpg")
    height, width = image.shape[:2]
    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), angle, 1.0)
    rotated = np.asarray(cv2.warpAffine(image, matrix, (width, height)), dtype=np.uint8)
    plain, turned = measures_of(image), measures_of(rotated)
    # cv2's positive angle turns the picture counter-clockwise: the subject's left eye (image
    # right) goes up, as when tilting toward the right shoulder
    assert turned.pose.roll - plain.pose.roll == pytest.approx(angle, abs=5.0)
    assert turned.pose.yaw == pytest.approx(plain.pose.yaw, abs=5.0)
    assert turned.pose.pitch == pytest.approx(plain.pose.pitch, abs=5.0)
    assert turned.ear == pytest.approx(plain.ear, rel=0.2)


def test_crop_regions_are_levelled_squares() -> None:
    region = region_from_box((100.0, 50.0, 200.0, 250.0), (120.0, 100.0), (180.0, 160.0))
    assert region.center == (150.0, 150.0)
    assert region.size == pytest.approx(300.0)  # 1.5 x the longer side
    assert region.angle == pytest.approx(np.pi / 4)
    # the crop matrix sends the centre to the middle of the crop and levels the eye line
    matrix = CropRegion(center=(10.0, 20.0), size=40.0, angle=np.pi / 2).crop_matrix(192)
    centre = matrix @ np.array([10.0, 20.0, 1.0])
    below = matrix @ np.array([10.0, 30.0, 1.0])  # along the (vertical) eye line
    assert centre == pytest.approx([96.0, 96.0])
    assert below[1] == pytest.approx(96.0) and below[0] > 96.0
