"""Moved-photo attack material: a photo held in front of a camera and moved by hand, rendered in 3D.

The photo is a flat sheet (or a sheet bent around a vertical or horizontal axis, as a print held
by its edges bends) posed in front of a pinhole camera (640x480, focal length 560 px, about 60
degrees across) and ray-cast: every camera pixel looks up the point of the sheet it sees. A
:class:`Pose` says how the sheet sits (turned, tilted, rolled, brought closer, slid, bent);
:data:`PATHS` are hand movements from the neutral pose, eased in and held (turn the photo to
either side, tilt it up or down, bring it closer, slide it, bend it and turn it), and
:func:`moved_photo_frames` renders one at the worker's 8 fps. A flat sheet's face points follow
one homography between any two frames, which is what the challenge engine's 3D check looks for
(:mod:`services.liveness.parallax`); a bent sheet is the harder case.

``python -m faceproof.testing.moved_photo PHOTO... --out DIR`` writes one MP4 per photo and
path into ``DIR`` and prints manifest rows (``attack,moved_photo``) for ``faceproof eval liveness``.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import cv2
import numpy as np
import numpy.typing as npt

from faceproof.testing.scripted_subject import FRAME_SIZE, WORKER_FPS

__all__ = ["FOCAL_PX", "PATHS", "Pose", "fit_photo", "moved_photo_frames", "render"]

Image = npt.NDArray[np.uint8]
FloatArray = npt.NDArray[np.float64]

#: Focal length of the simulated 640x480 camera, pixels (about 60 degrees horizontal field of view).
FOCAL_PX: Final = 560.0
#: The photo fills this share of the frame at the neutral pose.
PHOTO_FILL: Final = 0.75
_BACKGROUND: Final = (40, 40, 40)


@dataclass(frozen=True)
class Pose:
    """How the sheet sits: degrees (yaw turns it about its vertical axis, pitch tilts it about
    the horizontal one, roll rotates it in the image), ``scale`` (2: twice as close), ``shift``
    (pixels), ``bend`` (1 / bend radius in units of the sheet's width or height; 0: flat) about
    the ``bend_axis`` ("v": vertical, "h": horizontal)."""

    yaw: float = 0.0
    pitch: float = 0.0
    roll: float = 0.0
    scale: float = 1.0
    shift: tuple[float, float] = (0.0, 0.0)
    bend: float = 0.0
    bend_axis: str = "v"


def _rotation(yaw: float, pitch: float, roll: float) -> FloatArray:
    y, p, r = (math.radians(v) for v in (yaw, pitch, roll))
    ry = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    rx = np.array([[1, 0, 0], [0, math.cos(p), -math.sin(p)], [0, math.sin(p), math.cos(p)]])
    rz = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
    return np.asarray(rz @ rx @ ry, dtype=np.float64)


def _sheet_hits(origin: FloatArray, rays: FloatArray, curvature: float) -> tuple[FloatArray, FloatArray]:
    """Sheet coordinates (u along the bend, v along the axis) where the rays meet the sheet."""
    if abs(curvature) < 1e-12:
        t = -origin[2] / rays[..., 2]
        return origin[0] + t * rays[..., 0], origin[1] + t * rays[..., 1]
    radius = 1.0 / curvature  # a cylinder whose axis lies behind the sheet's centre
    ox, oz = origin[0], origin[2] - radius
    a = rays[..., 0] ** 2 + rays[..., 2] ** 2
    b = 2 * (ox * rays[..., 0] + oz * rays[..., 2])
    c = ox**2 + oz**2 - radius**2
    disc = b * b - 4 * a * c
    t = (-b - np.sqrt(np.maximum(disc, 0.0))) / (2 * a)
    x, z = ox + t * rays[..., 0], oz + t * rays[..., 2]
    u = np.where(disc < 0, 1e9, radius * np.arctan2(x, -z))
    return u, origin[1] + t * rays[..., 1]


def render(photo: Image, pose: Pose, size: tuple[int, int] = FRAME_SIZE) -> Image:
    """The camera's view of ``photo`` (BGR) posed as ``pose``, on a dark background."""
    width, height = size
    photo_h, photo_w = photo.shape[:2]
    xs, ys = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    rays = np.stack(
        [
            (xs - width / 2 - pose.shift[0]) / FOCAL_PX,
            (ys - height / 2 - pose.shift[1]) / FOCAL_PX,
            np.ones_like(xs),
        ],
        axis=-1,
    )
    rotation = _rotation(pose.yaw, pose.pitch, pose.roll)
    origin = rotation.T @ np.array([0.0, 0.0, -FOCAL_PX / pose.scale])
    local = rays @ rotation
    vertical = pose.bend_axis == "v"
    if not vertical:
        origin, local = origin[[1, 0, 2]], local[..., [1, 0, 2]]
    curvature = pose.bend / (photo_w if vertical else photo_h)
    u, v = _sheet_hits(origin, local, curvature)
    if not vertical:
        u, v = v, u
    map_x = (u + photo_w / 2).astype(np.float32)
    map_y = (v + photo_h / 2).astype(np.float32)
    view = cv2.remap(
        photo, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=_BACKGROUND
    )
    return np.asarray(view, dtype=np.uint8)


def fit_photo(image: Image, size: tuple[int, int] = FRAME_SIZE, fill: float = PHOTO_FILL) -> Image:
    """``image`` scaled so that it fills ``fill`` of the frame (aspect kept)."""
    height, width = image.shape[:2]
    s = fill * min(size[0] / width, size[1] / height)
    resized = cv2.resize(
        image, (max(1, round(width * s)), max(1, round(height * s))), interpolation=cv2.INTER_AREA
    )
    return np.asarray(resized, dtype=np.uint8)


#: Hand movements: the pose at the movement's fraction f (0: neutral, 1: the end).
PATHS: Final[dict[str, Callable[[float], Pose]]] = {
    "turn_left": lambda f: Pose(yaw=35 * f),
    "turn_right": lambda f: Pose(yaw=-35 * f),
    "tilt_up": lambda f: Pose(pitch=25 * f),
    "tilt_down": lambda f: Pose(pitch=-25 * f),
    "closer": lambda f: Pose(scale=1 + 0.5 * f),
    "closer_tilted": lambda f: Pose(scale=1 + 0.5 * f, yaw=10 * f, pitch=-6 * f),
    "slide": lambda f: Pose(shift=(150 * f, -90 * f), scale=1 - 0.25 * f),
    "slide_rolled": lambda f: Pose(shift=(-150 * f, 80 * f), yaw=-20 * f, roll=10 * f),
    "bent_turn": lambda f: Pose(bend=1.4, yaw=35 * f),
    "bent_tilt": lambda f: Pose(bend=1.4, bend_axis="h", pitch=25 * f),
    "bent_closer": lambda f: Pose(bend=1.2, scale=1 + 0.5 * f, yaw=8 * f),
    "bending": lambda f: Pose(bend=1.6 * f, yaw=20 * f),
}


def _ease(fraction: float) -> float:
    f = min(max(fraction, 0.0), 1.0)
    return 0.5 - 0.5 * math.cos(math.pi * f)


def moved_photo_frames(
    photo: Image, path: Callable[[float], Pose], *, still: int = 4, moving: int = 8, held: int = 8
) -> list[Image]:
    """Frames at 8 fps: ``still`` neutral frames, the movement over ``moving`` frames, then held."""
    sheet = fit_photo(photo)
    fractions = [0.0] * still + [(k + 1) / moving for k in range(moving)] + [1.0] * held
    return [render(sheet, path(_ease(f))) for f in fractions]


def write_video(frames: Sequence[Image], path: Path, fps: float = WORKER_FPS) -> Path:
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), fps, (width, height))
    try:
        for frame in frames:
            writer.write(frame)
    finally:
        writer.release()
    return path


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("photos", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--paths", default=",".join(PATHS), help="comma-separated names from PATHS")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for photo_path in args.photos:
        image = cv2.imread(str(photo_path))
        if image is None:
            raise SystemExit(f"cannot read {photo_path}")
        for name in args.paths.split(","):
            frames = moved_photo_frames(np.asarray(image, dtype=np.uint8), PATHS[name])
            video = write_video(frames, args.out / f"{photo_path.stem}__{name}.mp4")
            print(f"{video},attack,moved_photo")


if __name__ == "__main__":
    main()
