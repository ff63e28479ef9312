"""Shared helpers for the faces tests: where the real models and photos are, and cached pipelines."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import numpy.typing as npt

from faces.images import decode_image
from faces.packs import load_pack
from faces.pipeline import FacePipeline

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"
MODELS_DIR = SHARED / "models"
FACES_DATA = SHARED / "data" / "faces"
MAX_PIXELS = 40_000_000


def read_image(relative: str) -> npt.NDArray[np.uint8]:
    """A photo from ../shared/data/faces as a BGR array."""
    return decode_image((FACES_DATA / relative).read_bytes(), max_pixels=MAX_PIXELS)


@functools.cache
def pipeline(pack: str) -> FacePipeline:
    """Each pack is loaded once per test session (2 threads, like the CI machine)."""
    return load_pack(pack, MODELS_DIR, threads=2)
