"""The instruction overlay: the user's frame mirrored, with the current instruction drawn on it.

Pure and CPU-bound (call it through ``asyncio.to_thread``). Coordinates are those of the
mirrored view the user sees: an arrow points the way the user should move as in a mirror
(TURN_LEFT: to the user's left, which is the left of the mirrored picture), and the
NOSE_TO_TARGET marker sits at ``target`` (0..1, x right, y down) of the mirrored view.
"""

from __future__ import annotations

import math
from functools import cache
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFont

from contracts.values import ChallengeType
from services.call_agent.instructions import Screen

__all__ = ["ARROWS", "FONT_PATH", "blank_frame", "font", "render"]

RGB = npt.NDArray[np.uint8]
Font = ImageFont.FreeTypeFont | ImageFont.ImageFont

FONT_PATH = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
BOLD_FONT_PATH = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf")

#: Unit direction (x right, y down) of the arrow for each head-movement challenge.
ARROWS: dict[ChallengeType, tuple[float, float]] = {
    ChallengeType.TURN_LEFT: (-1.0, 0.0),
    ChallengeType.TURN_RIGHT: (1.0, 0.0),
    ChallengeType.LOOK_UP: (0.0, -1.0),
    ChallengeType.LOOK_DOWN: (0.0, 1.0),
}

WHITE = (255, 255, 255)
GOOD = (80, 220, 120)
BAD = (255, 90, 80)
ACCENT = (255, 200, 40)


@cache
def font(size: int, bold: bool = False) -> Font:
    """DejaVu Sans (it has the accents of every catalog) or Pillow's own scalable font."""
    path = BOLD_FONT_PATH if bold else FONT_PATH
    if path.exists():
        return ImageFont.truetype(str(path), size)
    return ImageFont.load_default(size=size)


def blank_frame(width: int = 640, height: int = 480) -> RGB:
    return np.full((height, width, 3), 40, dtype=np.uint8)


def render(frame: RGB, screen: Screen, now: float) -> RGB:
    """The mirrored ``frame`` (RGB, H x W x 3) with ``screen`` drawn on it; a new array."""
    mirrored = np.ascontiguousarray(frame[:, ::-1])
    height, width = mirrored.shape[:2]
    unit = max(8, min(width, height) // 24)
    if screen.final:
        mirrored = (mirrored.astype(np.uint16) * 35 // 100).astype(np.uint8)
        image = Image.fromarray(mirrored)
        _final(ImageDraw.Draw(image), screen, width, height, unit)
        return np.asarray(image, dtype=np.uint8).copy()
    banner_h = _banner_height(screen, unit)
    mirrored[:banner_h] = (mirrored[:banner_h].astype(np.uint16) * 45 // 100).astype(np.uint8)
    footer_top = height - int(unit * 2.2)
    mirrored[footer_top:] = (mirrored[footer_top:].astype(np.uint16) * 55 // 100).astype(np.uint8)
    image = Image.fromarray(mirrored)
    draw = ImageDraw.Draw(image)
    _banner(draw, screen, width, unit, now)
    _footer(draw, screen, width, height, unit, now)
    if screen.challenge in ARROWS:
        _arrow(draw, ARROWS[screen.challenge], width, height, unit)
    if screen.challenge is ChallengeType.NOSE_TO_TARGET and screen.target is not None:
        _target(draw, screen.target, width, height, unit)
    return np.asarray(image, dtype=np.uint8).copy()


def _banner_height(screen: Screen, unit: int) -> int:
    return int(unit * (2.6 if screen.notice is None else 4.0))


def _banner(draw: ImageDraw.ImageDraw, screen: Screen, width: int, unit: int, now: float) -> None:
    main = _fitting_font(draw, screen.text, width - 2 * unit, int(unit * 1.4), bold=True)
    _centered(draw, screen.text, width // 2, int(unit * 1.3), main, WHITE)
    notice = screen.notice
    if notice is not None and notice.until > now:
        small = _fitting_font(draw, notice.text, width - 2 * unit, unit)
        _centered(draw, notice.text, width // 2, int(unit * 3.1), small, GOOD if notice.good else BAD)


def _footer(
    draw: ImageDraw.ImageDraw, screen: Screen, width: int, height: int, unit: int, now: float
) -> None:
    y = height - int(unit * 1.1)
    text_font = font(int(unit * 1.2), True)
    progress = screen.progress()
    if progress is not None:
        draw.text((unit, y), progress, font=text_font, fill=WHITE, anchor="lm")
    seconds = screen.seconds_left(now)
    if seconds is not None:
        draw.text((width - unit, y), f"{seconds} s", font=text_font, fill=ACCENT, anchor="rm")


def _arrow(
    draw: ImageDraw.ImageDraw, direction: tuple[float, float], width: int, height: int, unit: int
) -> None:
    dx, dy = direction
    cx, cy = width / 2, height / 2
    # Beside the face, toward the edge it should move to.
    reach_x, reach_y = width * 0.36, height * 0.30
    tip = (cx + dx * reach_x, cy + dy * reach_y)
    length = unit * 4.0
    tail = (tip[0] - dx * length, tip[1] - dy * length)
    head = unit * 1.6
    nx, ny = -dy, dx  # normal
    base = (tip[0] - dx * head, tip[1] - dy * head)
    draw.line([tail, base], fill=ACCENT, width=max(3, unit // 2))
    draw.polygon(
        [
            tip,
            (base[0] + nx * head * 0.7, base[1] + ny * head * 0.7),
            (base[0] - nx * head * 0.7, base[1] - ny * head * 0.7),
        ],
        fill=ACCENT,
    )


def _target(
    draw: ImageDraw.ImageDraw, target: tuple[float, float], width: int, height: int, unit: int
) -> None:
    x = min(max(target[0], 0.0), 1.0) * width
    y = min(max(target[1], 0.0), 1.0) * height
    for radius, line in ((unit * 1.6, max(2, unit // 4)), (unit * 0.8, max(2, unit // 4))):
        draw.ellipse([x - radius, y - radius, x + radius, y + radius], outline=ACCENT, width=line)
    draw.ellipse([x - unit * 0.25, y - unit * 0.25, x + unit * 0.25, y + unit * 0.25], fill=ACCENT)


def _final(draw: ImageDraw.ImageDraw, screen: Screen, width: int, height: int, unit: int) -> None:
    colour = GOOD if screen.succeeded else BAD
    cx, cy = width / 2, height * 0.38
    radius = unit * 3.0
    draw.ellipse(
        [cx - radius, cy - radius, cx + radius, cy + radius], outline=colour, width=max(3, unit // 2)
    )
    if screen.succeeded:
        points = [
            (cx - radius * 0.5, cy),
            (cx - radius * 0.1, cy + radius * 0.4),
            (cx + radius * 0.55, cy - radius * 0.4),
        ]
        draw.line(points, fill=colour, width=max(3, unit // 2), joint="curve")
    else:
        k = radius * 0.45
        draw.line([(cx - k, cy - k), (cx + k, cy + k)], fill=colour, width=max(3, unit // 2))
        draw.line([(cx - k, cy + k), (cx + k, cy - k)], fill=colour, width=max(3, unit // 2))
    main = _fitting_font(draw, screen.text, width - 2 * unit, int(unit * 1.5), bold=True)
    _centered(draw, screen.text, int(cx), int(height * 0.68), main, WHITE)
    if screen.detail:
        small = _fitting_font(draw, screen.detail, width - 2 * unit, unit)
        _centered(draw, screen.detail, int(cx), int(height * 0.68 + unit * 2.2), small, WHITE)


def _fitting_font(
    draw: ImageDraw.ImageDraw, text: str, max_width: int, size: int, bold: bool = False
) -> Font:
    """The largest font up to ``size`` in which ``text`` fits on one line of ``max_width`` pixels."""
    chosen = font(size, bold)
    length = draw.textlength(text, font=chosen)
    if length > max_width:
        smaller = max(8, math.floor(size * max_width / length))
        chosen = font(smaller, bold)
    return chosen


def _centered(
    draw: ImageDraw.ImageDraw, text: str, x: int, y: int, text_font: Font, fill: tuple[int, int, int]
) -> None:
    draw.text((x, y), text, font=text_font, fill=fill, anchor="mm", stroke_width=1, stroke_fill=(0, 0, 0))
