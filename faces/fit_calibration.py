"""Fit a pack's calibration on labelled pairs (LFW View 1 dev-test) and print the result as JSON.

    python -m faces.fit_calibration --pack permissive --models-dir ../shared/models \\
        --pairs ../shared/data/faces/lfw-devtest/pairs.csv --images ../shared/data/faces/lfw-devtest

Each image is analysed once and the face nearest its centre is used: LFW images are centred on
the labelled person, and the largest face is a bystander in a few of them (7 of the 1,549
dev-test images), which would measure our face choice rather than the embedder. Pairs with an
image where no face was found are left out of the fit and listed (``faceproof eval verify``,
which measures accuracy, counts them as errors instead); the pair, image and threshold code is
shared with it in :mod:`faces.evaluation`. ``a`` and ``b`` come from logistic regression of
``same`` on the cosine (Platt scaling, Newton's method); the cosine threshold is the smallest one
with at most ``far`` of the different-person pairs at or above it, rounded up to 3 decimals.
With 500 negative pairs and far = 1e-3 that means *no* false accept among the 500: an honest FAR
estimate from so few pairs is "below about 0.6 % (95 %)", not 1e-3.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from faces.calibration import Calibration
from faces.errors import FaceError
from faces.evaluation import (
    FaceRule,
    Pair,
    accuracy_at,
    add_precision_option,
    analyse_images,
    best_accuracy,
    embed_centre_faces,
    read_pairs,
    score_pairs,
    threshold_at_far,
)
from faces.packs import load_pack
from faces.pipeline import FacePipeline

__all__ = [
    "CalibrationReport",
    "Pair",
    "accuracy_at",
    "best_accuracy",
    "evaluate",
    "fit_platt",
    "main",
    "read_pairs",
    "threshold_at_far",
]


@dataclass(frozen=True)
class CalibrationReport:
    pack: str
    embedder: str
    pairs: int
    pairs_used: int
    images: int
    images_without_face: list[str]
    a: float
    b: float
    far_target: float
    cosine_threshold: float
    similarity_threshold: float
    false_accepts: int
    false_rejects: int
    accuracy_at_threshold: float
    tar_at_threshold: float
    best_accuracy: float
    best_threshold: float
    ms_per_image: float


def fit_platt(cosines: npt.ArrayLike, labels: npt.ArrayLike, *, iterations: int = 100) -> tuple[float, float]:
    """Logistic regression ``P(same) = sigmoid(a * cosine + b)`` by Newton's method (IRLS).

    Uses Platt's smoothed targets, so that perfectly separable data still gives finite values.
    """
    x = np.asarray(cosines, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    positives, negatives = int(y.sum()), int((~y).sum())
    targets = np.where(y, (positives + 1.0) / (positives + 2.0), 1.0 / (negatives + 2.0))
    design = np.stack([x, np.ones_like(x)], axis=1)
    weights = np.zeros(2)
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(design @ weights)))
        gradient = design.T @ (p - targets)
        hessian = design.T @ (design * (p * (1.0 - p))[:, np.newaxis]) + 1e-9 * np.eye(2)
        step = np.linalg.solve(hessian, gradient)
        weights -= step
        if float(np.abs(step).max()) < 1e-10:
            break
    return float(weights[0]), float(weights[1])


def _embed_images(
    pipeline: FacePipeline, images_dir: Path, files: Sequence[str]
) -> dict[str, npt.NDArray[np.float64] | None]:
    """The centre face's embedding per file (None: no face); ``faceproof.bench.peers`` uses it."""
    return {
        file: None if vector is None else vector.astype(np.float64)
        for file, vector in embed_centre_faces(pipeline, images_dir, files).items()
    }


def evaluate(
    pipeline: FacePipeline, pairs: Sequence[Pair], images_dir: Path, *, far: float = 1e-3
) -> CalibrationReport:
    """Run the pipeline over the pairs' images and fit the calibration."""
    files = sorted({file for pair in pairs for file in (pair.file_a, pair.file_b)})
    started = time.perf_counter()
    images = analyse_images(pipeline, images_dir, files)
    elapsed = time.perf_counter() - started
    scores = score_pairs(pairs, images, FaceRule.CENTRE)
    x = scores.cosines[~scores.missing]
    y = scores.labels[~scores.missing]
    a_fit, b_fit = fit_platt(x, y)
    threshold = threshold_at_far(x[~y], far)
    best, best_t = best_accuracy(x, y)
    similarity = Calibration(a=a_fit, b=b_fit, cosine_threshold=threshold).threshold
    return CalibrationReport(
        pack=pipeline.info.pack,
        embedder=pipeline.info.models[-1].file,
        pairs=len(pairs),
        pairs_used=int(x.size),
        images=len(files),
        images_without_face=[file for file, image in images.items() if not image.faces],
        a=round(a_fit, 4),
        b=round(b_fit, 4),
        far_target=far,
        cosine_threshold=threshold,
        similarity_threshold=round(similarity, 4),
        false_accepts=int(np.sum(x[~y] >= threshold)),
        false_rejects=int(np.sum(x[y] < threshold)),
        accuracy_at_threshold=round(accuracy_at(x, y, threshold), 4),
        tar_at_threshold=round(float(np.mean(x[y] >= threshold)), 4),
        best_accuracy=round(best, 4),
        best_threshold=round(best_t, 4),
        ms_per_image=round(1000 * elapsed / max(len(files), 1), 1),
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m faces.fit_calibration", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--pack", required=True)
    parser.add_argument("--pairs", type=Path, required=True, help="CSV with fold,file_a,file_b,same")
    parser.add_argument("--images", type=Path, required=True, help="directory the pair files are relative to")
    parser.add_argument("--models-dir", type=Path, default=Path("../shared/models"))
    parser.add_argument("--far", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=0)
    add_precision_option(parser)
    args = parser.parse_args(argv)
    try:
        pipeline = load_pack(
            args.pack, args.models_dir, threads=args.threads, embedder_precision=args.embedder_precision
        )
        report = evaluate(pipeline, read_pairs(args.pairs), args.images, far=args.far)
    except FaceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(dataclasses.asdict(report), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
