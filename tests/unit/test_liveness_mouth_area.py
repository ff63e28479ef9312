"""The mouth area (services.liveness.mouth_area) on drawn pictures, and the OPEN_MOUTH rule that
reads it: the lips deforming in the mesh is not enough when the mouth's pixels do not change (the
still-picture attack of issue 15, performed on real frames in
tests/component/test_liveness_still_picture.py)."""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from contracts.values import ChallengeType
from services.liveness.analysis import FrameAnalysis
from services.liveness.challenges import DEFAULT_THRESHOLDS, Challenge, ChallengeEvaluator, ChallengeStatus
from services.liveness.mouth_area import AREA_CELLS, area_from_text, area_similarity, area_to_text, mouth_area
from services.liveness.parallax import LIPS, shape_of
from tests.unit.test_liveness_challenges import face

Image = npt.NDArray[np.uint8]
BOX = (220.0, 120.0, 420.0, 360.0)
LIMIT = DEFAULT_THRESHOLDS.max_mouth_area_similarity


def drawn_face(*, open_mouth: bool = False, shift: tuple[int, int] = (0, 0)) -> Image:
    """A grey face with eyes, a nose and lips (a line, or a dark opening) on a textured wall."""
    rng = np.random.default_rng(7)
    frame = (rng.integers(90, 130, (480, 640, 3))).astype(np.uint8)
    cx, cy = 320 + shift[0], 240 + shift[1]
    cv2.ellipse(frame, (cx, cy), (95, 125), 0, 0, 360, (150, 160, 190), -1)
    for dx in (-40, 40):
        cv2.circle(frame, (cx + dx, cy - 35), 10, (40, 40, 40), -1)
    cv2.line(frame, (cx, cy - 20), (cx - 8, cy + 25), (110, 120, 150), 4)
    cv2.ellipse(frame, (cx, cy + 105), (40, 12), 0, 0, 180, (120, 130, 160), 3)  # the chin's shadow
    if open_mouth:
        cv2.ellipse(frame, (cx, cy + 65), (32, 24), 0, 0, 360, (25, 20, 30), -1)
    else:
        cv2.line(frame, (cx - 32, cy + 60), (cx + 32, cy + 60), (80, 80, 140), 5)
    return frame


def test_an_area_is_its_cells_and_stores_as_text() -> None:
    area = mouth_area(drawn_face(), BOX)
    assert len(area) == AREA_CELLS
    assert area_from_text(area_to_text(area)) == area
    with pytest.raises(ValueError, match="base64"):
        area_from_text("not base64!")
    with pytest.raises(ValueError, match="cells"):
        area_from_text(area_to_text(area[:-1]))


def test_the_same_picture_moved_a_little_or_lit_differently_is_the_same() -> None:
    closed = mouth_area(drawn_face(), BOX)
    assert area_similarity(closed, closed) == pytest.approx(1.0)
    # the face moved by a hand's sway under the same box: found at a shift
    assert area_similarity(closed, mouth_area(drawn_face(shift=(6, 5)), BOX)) > 0.9
    darker = np.clip(drawn_face().astype(np.float32) * 0.6 + 10, 0, 255).astype(np.uint8)
    assert area_similarity(closed, mouth_area(darker, BOX)) > 0.98


def test_a_mouth_that_opens_changes_the_area() -> None:
    closed = mouth_area(drawn_face(), BOX)
    opened = mouth_area(drawn_face(open_mouth=True), BOX)
    assert area_similarity(closed, opened) < LIMIT
    assert area_similarity(closed, mouth_area(drawn_face(open_mouth=True, shift=(4, 3)), BOX)) < LIMIT


def test_a_flat_area_and_a_face_at_the_border_are_handled() -> None:
    grey = np.full((480, 640, 3), 128, dtype=np.uint8)
    flat = mouth_area(grey, BOX)
    assert area_similarity(flat, mouth_area(drawn_face(), BOX)) == 1.0  # nothing to compare: no change
    at_border = mouth_area(drawn_face(), (500.0, 300.0, 700.0, 540.0))  # past the right and bottom edges
    assert len(at_border) == AREA_CELLS


# -- the OPEN_MOUTH rule ------------------------------------------------------------------------


def _mesh(*, lips_down: float) -> npt.NDArray[np.float32]:
    """468 mesh points, the lips ``lips_down`` pixels lower than the rest of the face's plane."""
    points = np.random.default_rng(3).uniform(150.0, 350.0, (468, 3)).astype(np.float32)
    points[list(LIPS), 1] += lips_down
    return points


def _frame(mar: float, lips_down: float, area: bytes) -> FrameAnalysis:
    frame = face(mar=mar, size=0.5)
    assert frame.measures is not None
    measures = replace(frame.measures, shape=shape_of(_mesh(lips_down=lips_down)), mouth_area=area)
    return replace(frame, measures=measures)


def _judge(frames: list[FrameAnalysis]) -> ChallengeStatus:
    evaluator = ChallengeEvaluator(Challenge(ChallengeType.OPEN_MOUTH), 0.0)
    for n, frame in enumerate(frames):
        evaluator.update(n / 8.0, frame)
    return evaluator.verdict.status


def test_open_mouth_needs_the_area_to_change_as_well_as_the_lips() -> None:
    closed_area = mouth_area(drawn_face(), BOX)
    open_area = mouth_area(drawn_face(open_mouth=True), BOX)
    closed = _frame(0.05, 0.0, closed_area)
    assert _judge([closed] * 4 + [_frame(0.5, 40.0, open_area)] * 4) is ChallengeStatus.PASSED
    # the mesh reads the mouth open and the lips off the plane, the picture stays the same: a still
    assert _judge([closed] * 4 + [_frame(0.5, 40.0, closed_area)] * 8) is ChallengeStatus.PENDING
    # analyses stored without an area are judged as before
    bare = [_without_area(f) for f in (closed, _frame(0.5, 40.0, closed_area))]
    assert _judge([bare[0]] * 4 + [bare[1]] * 4) is ChallengeStatus.PASSED


def _without_area(frame: FrameAnalysis) -> FrameAnalysis:
    assert frame.measures is not None
    return replace(frame, measures=replace(frame.measures, mouth_area=None))
