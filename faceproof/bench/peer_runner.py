"""Runs ONE peer library over a list of images and pairs: JSON request on stdin, JSON result to a file.

The result goes to the request's ``output`` path, not to stdout, which the libraries print to.

This file is executed by the peers' own virtual environment (``faceproof bench peers`` makes it),
never imported by the service: it uses only the standard library and the peer library, which are
loaded with :func:`importlib.import_module` so that the service's type checker does not need them.

Each image is loaded, its faces detected and the face nearest the image centre encoded (LFW
images are centred on the labelled person; our own pipeline is measured the same way). The clock
runs over every unique image after a short warm-up; distances are computed afterwards, untimed.

* ``face_recognition``: its defaults (HOG detector, one upsample, 5-point landmarks, one jitter);
  euclidean distance, same person at ``<= 0.6``.
* ``deepface``: ``DeepFace.represent(model_name="Dlib")`` with its defaults (OpenCV Haar detector,
  alignment on); cosine distance, same person at ``<=`` its own threshold for Dlib/cosine.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

Vector = list[float]
Box = tuple[float, float, float, float]  # x, y, width, height


def _nearest_centre(boxes: Sequence[Box], width: float, height: float) -> int:
    def distance(box: Box) -> float:
        x, y, w, h = box
        return math.hypot(x + w / 2 - width / 2, y + h / 2 - height / 2)

    return min(range(len(boxes)), key=lambda index: distance(boxes[index]))


def _face_recognition() -> tuple[
    Callable[[Path], Vector | None], Callable[[Vector, Vector], float], dict[str, Any]
]:
    fr: Any = importlib.import_module("face_recognition")

    def encode(path: Path) -> Vector | None:
        image = fr.load_image_file(str(path))
        locations = fr.face_locations(image)  # (top, right, bottom, left)
        if not locations:
            return None
        boxes = [
            (float(left), float(top), float(right - left), float(bottom - top))
            for top, right, bottom, left in locations
        ]
        chosen = locations[_nearest_centre(boxes, float(image.shape[1]), float(image.shape[0]))]
        encodings = fr.face_encodings(image, known_face_locations=[chosen])
        return [float(value) for value in encodings[0]]

    def distance(a: Vector, b: Vector) -> float:
        return math.dist(a, b)

    info = {
        "version": version("face_recognition"),
        "dlib": version("dlib-bin"),
        "detector": "hog (1 upsample)",
        "model": "dlib_face_recognition_resnet_model_v1, 5-point landmarks, 1 jitter",
        "metric": "euclidean distance",
        "default_threshold": 0.6,
    }
    return encode, distance, info


def _prepare_deepface_home(home: Path) -> None:
    """Put the dlib weights where deepface looks, copied from face_recognition_models (no download)."""
    models: Any = importlib.import_module("face_recognition_models")
    source = Path(str(models.face_recognition_model_location())).parent
    weights = home / ".deepface" / "weights"
    weights.mkdir(parents=True, exist_ok=True)
    for name in ("dlib_face_recognition_resnet_model_v1.dat", "shape_predictor_5_face_landmarks.dat"):
        if not (weights / name).is_file():
            shutil.copyfile(source / name, weights / name)


def _deepface(
    home: Path,
) -> tuple[Callable[[Path], Vector | None], Callable[[Vector, Vector], float], dict[str, Any]]:
    _prepare_deepface_home(home)
    os.environ["DEEPFACE_HOME"] = str(home)
    deepface: Any = importlib.import_module("deepface.DeepFace")
    verification: Any = importlib.import_module("deepface.modules.verification")
    image_module: Any = importlib.import_module("PIL.Image")

    def encode(path: Path) -> Vector | None:
        try:
            faces = deepface.represent(img_path=str(path), model_name="Dlib")
        except ValueError:  # "Face could not be detected" (enforce_detection defaults to True)
            return None
        if not faces:
            return None
        with image_module.open(path) as image:
            width, height = image.size
        boxes = [
            (
                float(f["facial_area"]["x"]),
                float(f["facial_area"]["y"]),
                float(f["facial_area"]["w"]),
                float(f["facial_area"]["h"]),
            )
            for f in faces
        ]
        return [
            float(value) for value in faces[_nearest_centre(boxes, float(width), float(height))]["embedding"]
        ]

    def distance(a: Vector, b: Vector) -> float:
        return float(verification.find_cosine_distance(a, b))

    info = {
        "version": version("deepface"),
        "dlib": version("dlib-bin"),
        "detector": "opencv (Haar cascade, deepface's default)",
        "model": "Dlib (dlib_face_recognition_resnet_model_v1), align=True",
        "metric": "cosine distance",
        "default_threshold": float(verification.find_threshold("Dlib", "cosine")),
    }
    return encode, distance, info


def run(request: dict[str, Any]) -> dict[str, Any]:
    library = str(request["library"])
    images_dir = Path(request["images_dir"])
    files = [str(name) for name in request["files"]]
    pairs = [(int(a), int(b)) for a, b in request["pairs"]]
    if library == "face_recognition":
        encode, distance, info = _face_recognition()
    elif library == "deepface":
        encode, distance, info = _deepface(Path(request["deepface_home"]))
    else:
        raise SystemExit(f"unknown library {library!r}")
    for name in files[: int(request.get("warmup", 5))]:
        encode(images_dir / name)
    wall, cpu = time.perf_counter(), time.process_time()
    vectors = [encode(images_dir / name) for name in files]
    seconds, cpu_seconds = time.perf_counter() - wall, time.process_time() - cpu
    distances: list[float | None] = []
    for a, b in pairs:
        va, vb = vectors[a], vectors[b]
        distances.append(None if va is None or vb is None else distance(va, vb))
    return {
        "library": library,
        **info,
        "images": len(files),
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "no_face": [name for name, vector in zip(files, vectors, strict=True) if vector is None],
        "distances": distances,
    }


def main() -> int:
    request = json.load(sys.stdin)
    result = run(request)
    Path(request["output"]).write_text(json.dumps(result), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
