"""The lower face's appearance, for OPEN_MOUTH: does the picture of the mouth change at all?

The face mesh can read a still picture's mouth as opening. On a tracked frame its crop is framed
on its own last points, and on some faces it then fits the whole face differently from a
detected frame: on the LFW photo ``LK_Advani_0001`` the eyes move by 25 px, the chin by 25 px and
the mouth's aspect ratio goes from 0.25 to 0.41-0.49, on a photo that does not change at all. A
photo held to the camera with a camera's noise and a hand's sway passed OPEN_MOUTH that way
(docs/liveness.md, "A still picture opens its mouth"). A mouth that opens changes the pixels of
the lower face (a dark opening, teeth, a lower chin); a picture held to the camera does not.

So each frame keeps a small grey picture of the mouth and chin (:func:`mouth_area`), framed on
the face's last **detection** box, never on the mesh: the detector frames a still within a pixel
or two on every detection, and the box is reused on the tracked frames in between. Two such
pictures are compared by their normalised cross-correlation at the best shift of up to
:data:`MARGIN` cells either way (:func:`area_similarity`), so a hand's sway between detections is
not a change. Measured on this project's path (8 fps, JPEG 85, detector every 5th frame): the
LFW photo and a frozen video frame held with noise and a sway of up to 8 px stay at 0.82 or more
between any two of their frames; the annotated real openings of the shared recordings read
0.14-0.64 against their closed mouth on most frames, 0.79 at most; a small, brief opening
(``liveportrait_d11``, MAR 0.4-0.6) reads 0.70-0.86, which sets the threshold
(``Thresholds.max_mouth_area_similarity``, 0.85; docs/liveness.md).

Per frame the picture is :data:`AREA_CELLS` grey levels (``bytes``), stored with the frame's
measures so a replay of stored analyses judges the same. It is a coarse picture of the lower face
(26 x 22 cells), biometric all the same: it lives in the frame rows and the liveness worker's
progress, and the session's erasure removes both (``infra.retention``).
"""

from __future__ import annotations

import base64
import binascii
from typing import Final

import cv2
import numpy as np
import numpy.typing as npt

__all__ = [
    "AREA_CELLS",
    "AREA_SIZE",
    "MARGIN",
    "area_from_text",
    "area_similarity",
    "area_to_text",
    "mouth_area",
]

Box = tuple[float, float, float, float]

#: Cells (width, height) of the compared picture: the box's middle 70 % across, from 55 % of its
#: height down to 5 % below it (the mouth and the chin).
AREA_SIZE: Final = (20, 16)
#: Extra cells kept on each side, for the shift search.
MARGIN: Final = 3
#: Grey levels per frame.
AREA_CELLS: Final = (AREA_SIZE[0] + 2 * MARGIN) * (AREA_SIZE[1] + 2 * MARGIN)


def mouth_area(frame_bgr: npt.NDArray[np.uint8], box: Box) -> bytes:
    """The mouth and chin under ``box`` (a detector's face box), with :data:`MARGIN` cells around,
    as :data:`AREA_CELLS` grey levels, row by row (each cell the mean of its pixels)."""
    x1, y1, x2, y2 = box
    width, height = x2 - x1, y2 - y1
    cell_w, cell_h = 0.7 * width / AREA_SIZE[0], 0.5 * height / AREA_SIZE[1]
    left = round(x1 + 0.15 * width - MARGIN * cell_w)
    top = round(y1 + 0.55 * height - MARGIN * cell_h)
    right = max(round(x2 - 0.15 * width + MARGIN * cell_w), left + 1)
    bottom = max(round(y2 + 0.05 * height + MARGIN * cell_h), top + 1)
    frame_h, frame_w = frame_bgr.shape[:2]
    pad = max(0, -left, -top, right - frame_w, bottom - frame_h)
    image = frame_bgr
    if pad:  # a face at the border: the border's pixels repeated, as far as needed
        image = np.asarray(cv2.copyMakeBorder(frame_bgr, pad, pad, pad, pad, cv2.BORDER_REPLICATE))
        left, top, right, bottom = left + pad, top + pad, right + pad, bottom + pad
    gray = cv2.cvtColor(image[top:bottom, left:right], cv2.COLOR_BGR2GRAY)
    cells = (AREA_SIZE[0] + 2 * MARGIN, AREA_SIZE[1] + 2 * MARGIN)
    return cv2.resize(gray, cells, interpolation=cv2.INTER_AREA).tobytes()


def _grid(area: bytes) -> npt.NDArray[np.float32]:
    if len(area) != AREA_CELLS:
        raise ValueError(f"a mouth area has {AREA_CELLS} cells, not {len(area)}")
    rows, cols = AREA_SIZE[1] + 2 * MARGIN, AREA_SIZE[0] + 2 * MARGIN
    return np.frombuffer(area, dtype=np.uint8).reshape(rows, cols).astype(np.float32)


def area_similarity(reference: bytes, current: bytes) -> float:
    """How alike two mouth areas are: the normalised cross-correlation (-1..1; 1 the same
    picture, whatever the exposure) of ``reference``'s centre with ``current`` at the best shift
    of up to :data:`MARGIN` cells either way. A flat area (no contrast) is "the same" (1.0)."""
    template = _grid(reference)[MARGIN:-MARGIN, MARGIN:-MARGIN]
    if float(template.std()) < 1e-3:
        return 1.0
    scores = cv2.matchTemplate(_grid(current), template, cv2.TM_CCOEFF_NORMED)
    return float(np.nan_to_num(scores, nan=1.0).max())


def area_to_text(area: bytes) -> str:
    """The area as stored in JSON documents (base64)."""
    return base64.b64encode(area).decode("ascii")


def area_from_text(text: str) -> bytes:
    """:func:`area_to_text`'s inverse; ``ValueError`` for anything that is not a mouth area."""
    try:
        area = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise ValueError("a mouth area is base64 text") from exc
    _grid(area)
    return area
