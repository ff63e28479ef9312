"""Shared helpers for the faces tests: where the real models and photos are, and cached pipelines."""

from __future__ import annotations

import functools

import numpy as np
import numpy.typing as npt

from faces.images import decode_image
from faces.packs import load_pack
from faces.pipeline import FacePipeline
from tests.paths import DATA_DIR, MODELS_DIR

FACES_DATA = DATA_DIR / "faces"
MAX_PIXELS = 40_000_000


def read_image(relative: str) -> npt.NDArray[np.uint8]:
    """A photo from ../shared/data/faces as a BGR array."""
    return decode_image((FACES_DATA / relative).read_bytes(), max_pixels=MAX_PIXELS)


@functools.cache
def pipeline(pack: str) -> FacePipeline:
    """Each pack is loaded once per test session (2 threads, like the CI machine)."""
    return load_pack(pack, MODELS_DIR, threads=2)
