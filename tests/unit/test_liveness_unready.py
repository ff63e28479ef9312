"""The unready start of ``faceproof eval liveness --unready``: a recording's own first frames made
too dark, too far or cut off, and which live rows get which (no models: synthetic pictures)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from faceproof.cli import app
from faceproof.evaluation.liveness import Label, ManifestRow, unready_for
from faceproof.testing.unready import (
    CUT_OFF_SHARE,
    DARK_FACE_LUMA,
    FAR_RELATIVE_SIZE,
    Image,
    Unready,
    face_luma,
    unready_frame,
    unready_prefix,
)

BOX = (300.0, 140.0, 500.0, 340.0)  # a 200 px face right of the centre of a 640x480 frame


def picture(shade: int = 0) -> Image:
    """A grey wall (90) and a bright textured face (about 150) in ``BOX``."""
    image = np.full((480, 640, 3), 90, dtype=np.uint8)
    x1, y1, x2, y2 = (int(v) for v in BOX)
    rng = np.random.default_rng(shade)
    image[y1:y2, x1:x2] = np.clip(150 + shade + rng.normal(0, 10, (y2 - y1, x2 - x1, 3)), 0, 255)
    return image


def face_columns(image: Image) -> tuple[int, int, int, int]:
    """The bounding box (x1, y1, x2, y2) of the face's bright pixels."""
    ys, xs = np.nonzero(image[:, :, 1] > 120)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def test_a_dark_start_puts_the_face_under_the_too_dark_limit() -> None:
    image = picture()
    assert face_luma(image, BOX) == pytest.approx(150, abs=3)
    dark = unready_frame(image, BOX, Unready.DARK, seed=1)
    assert dark.shape == image.shape and dark.dtype == np.uint8
    assert face_luma(dark, BOX) == pytest.approx(DARK_FACE_LUMA, abs=1.5)
    assert face_luma(dark, BOX) < 28  # Readiness.min_face_luma
    assert np.array_equal(dark, unready_frame(image, BOX, Unready.DARK, seed=1))  # seeded noise
    assert not np.array_equal(dark, unready_frame(image, BOX, Unready.DARK, seed=2))


def test_a_far_start_shrinks_the_face_about_the_centre_onto_a_wall() -> None:
    far = unready_frame(picture(), BOX, Unready.FAR)
    x1, y1, x2, y2 = face_columns(far)
    assert max(x2 - x1, y2 - y1) / 480 == pytest.approx(FAR_RELATIVE_SIZE, abs=0.01)
    # shrunk towards the frame's centre (320, 240): the face's centre (400, 240) moves in
    assert (x1 + x2) / 2 == pytest.approx(320 + (400 - 320) * FAR_RELATIVE_SIZE * 480 / 200, abs=2)
    assert far[0, 0].tolist() == pytest.approx([90, 90, 90], abs=12)  # no black border


def test_a_cut_off_start_pushes_the_face_past_the_nearer_edge() -> None:
    cut = unready_frame(picture(), BOX, Unready.CUT_OFF)
    x1, _, x2, _ = face_columns(cut)
    assert x2 == 640  # the face is right of the centre: pushed out on the right
    assert x2 - x1 == pytest.approx(200 * (1 - CUT_OFF_SHARE), abs=2)
    mirrored = np.ascontiguousarray(picture()[:, ::-1])
    left_box = (640 - BOX[2], BOX[1], 640 - BOX[0], BOX[3])
    x1, _, x2, _ = face_columns(unready_frame(mirrored, left_box, Unready.CUT_OFF))
    assert x1 == 0 and x2 - x1 == pytest.approx(200 * (1 - CUT_OFF_SHARE), abs=2)


def test_the_prefix_is_the_first_frames_made_unready_the_last_repeated() -> None:
    frames = [picture(shade) for shade in (0, 20)]
    prefix = unready_prefix(frames, BOX, Unready.FAR, 5)
    assert len(prefix) == 5
    assert np.array_equal(prefix[0], unready_frame(frames[0], BOX, Unready.FAR))
    assert all(np.array_equal(p, unready_frame(frames[1], BOX, Unready.FAR)) for p in prefix[1:])
    with pytest.raises(ValueError, match="no frames"):
        unready_prefix([], BOX, Unready.DARK, 3)
    with pytest.raises(ValueError, match="outside"):
        face_luma(picture(), (700.0, 10.0, 800.0, 100.0))


def row(name: str, label: Label) -> ManifestRow:
    return ManifestRow(name, Path(name), label, None if label is Label.LIVE else "print")


def test_only_live_rows_start_unready_each_with_its_own_seeded_condition() -> None:
    conditions = list(Unready)
    assert unready_for(row("photo.jpg", Label.ATTACK), conditions, 30107) is None
    assert unready_for(row("a.mp4", Label.LIVE), [], 30107) is None
    drawn = {unready_for(row(f"v{n}.mp4", Label.LIVE), conditions, 30107) for n in range(30)}
    assert drawn == set(Unready)  # every condition gets rows
    again = [unready_for(row(f"v{n}.mp4", Label.LIVE), conditions, 30107) for n in range(30)]
    assert again == [unready_for(row(f"v{n}.mp4", Label.LIVE), conditions, 30107) for n in range(30)]
    assert unready_for(row("a.mp4", Label.LIVE), [Unready.FAR], 1) is Unready.FAR


def test_the_cli_refuses_an_unknown_unready_condition() -> None:
    done = CliRunner().invoke(
        app,
        ["eval", "liveness", "--shared-data", ".", "--unready", "dark,sleepy", "--no-prechecks"],
    )
    assert done.exit_code != 0
    assert "unknown condition" in done.output and "cut_off" in done.output
