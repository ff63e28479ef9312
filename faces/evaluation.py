"""Face verification accuracy: labelled pairs through the real pipeline, and the metrics (pure numpy).

Used by ``faceproof eval verify`` and ``python -m faces.fit_calibration``.

Pipeline side:

* :func:`read_pairs` reads ``file_a,file_b,same[,fold]``; :func:`analyse_images` runs
  :meth:`FacePipeline.analyze <faces.pipeline.FacePipeline.analyze>` (the service's own detection,
  alignment and embedding) once per unique image.
* :meth:`AnalysedImage.probe` picks the face a pair is scored with: :attr:`FaceRule.CENTRE` (nearest
  the image centre; LFW images are centred on the labelled person) or :attr:`FaceRule.LARGEST`
  (what the service compares).
* :func:`score_pairs`: cosine per pair. A pair with an image where no face was found (or whose face
  fails the quality filter) is **not dropped**: it gets cosine ``-1``, the lowest possible score, so
  every threshold rejects it: a same-person pair counts as a false reject, a different-person pair
  as a correct reject (what the service does: no face, no match).

Metric side (scores and boolean labels in, "same" when ``score >= threshold``):

* :func:`roc_curve`, :func:`roc_auc` (trapezoid; equals the Mann-Whitney probability that a random
  same-person pair outscores a random different-person pair, ties counting one half),
* :func:`tar_at_far`: the *conservative* convention, no interpolation: the lowest threshold whose
  observed FAR does not exceed the target, and the TAR there. With ``n`` different-person pairs at
  most ``floor(far * n)`` false accepts are allowed; with 500 that means 5 at 1e-2 and none at 1e-3,
* :func:`equal_error_rate`: where FAR = FRR, linearly interpolated between the two ROC points that
  straddle it,
* :func:`best_accuracy`, :func:`kfold_accuracy`: accuracy at the best threshold, either chosen on
  all pairs (optimistic) or on k-1 folds and tested on the held-out one (the LFW protocol).
"""

from __future__ import annotations

import argparse
import csv
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Final, get_args

import numpy as np
import numpy.typing as npt

from contracts.values import QualityFilter
from faces.detection import Detection
from faces.images import decode_image
from faces.pipeline import Face, FacePipeline
from faces.quality import passes
from faces.runtime import Precision

__all__ = [
    "NO_FACE_SCORE",
    "AnalysedImage",
    "FaceRule",
    "KFoldAccuracy",
    "Pair",
    "PairScores",
    "Roc",
    "VerificationMetrics",
    "accuracy_at",
    "add_precision_option",
    "analyse_images",
    "assign_folds",
    "best_accuracy",
    "embed_centre_faces",
    "equal_error_rate",
    "kfold_accuracy",
    "nearest_centre",
    "read_pairs",
    "roc_auc",
    "roc_curve",
    "score_pairs",
    "tar_at_far",
    "threshold_at_far",
    "verification_metrics",
]

#: The cosine given to a pair with an image without a (usable) face: every threshold rejects it.
NO_FACE_SCORE: Final = -1.0
_MAX_PIXELS: Final = 40_000_000
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


# --------------------------------------------------------------------------------------------
# Pairs and images


@dataclass(frozen=True)
class Pair:
    file_a: str
    file_b: str
    same: bool
    fold: int | None = None


def read_pairs(path: Path) -> list[Pair]:
    """Pairs from a CSV with columns ``file_a,file_b,same`` (1/0) and an optional ``fold`` (integer)."""
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = {"file_a", "file_b", "same"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
        pairs = []
        for line, row in enumerate(reader, start=2):
            same = row["same"].strip().lower()
            if same not in {"0", "1", "true", "false"}:
                raise ValueError(f"{path}:{line}: same must be 1 or 0, got {row['same']!r}")
            fold = (row.get("fold") or "").strip()
            pairs.append(
                Pair(row["file_a"], row["file_b"], same in {"1", "true"}, int(fold) if fold else None)
            )
    return pairs


def assign_folds(pairs: Sequence[Pair], folds: int) -> list[Pair]:
    """The same pairs with ``folds`` stratified folds: the i-th same-person pair (and the i-th
    different-person pair) in file order goes to fold ``i % folds + 1``. Deterministic."""
    if folds < 2:
        raise ValueError("need at least 2 folds")
    counters = {True: 0, False: 0}
    result = []
    for pair in pairs:
        index = counters[pair.same]
        counters[pair.same] += 1
        result.append(Pair(pair.file_a, pair.file_b, pair.same, index % folds + 1))
    return result


class FaceRule(StrEnum):
    """Which face of an image a pair is scored with."""

    CENTRE = "centre"  #: nearest the image centre (LFW images are centred on the labelled person)
    LARGEST = "largest"  #: the largest face, as the service's compare does


@dataclass(frozen=True)
class AnalysedImage:
    """One image through the pipeline: its size and every face found (with quality)."""

    file: str
    width: int
    height: int
    faces: tuple[Face, ...]

    def probe(self, rule: FaceRule) -> Face | None:
        if not self.faces:
            return None
        if rule is FaceRule.LARGEST:
            return self.faces[0]  # analyze returns the largest first
        detections = [face.detection for face in self.faces]
        return self.faces[nearest_centre(detections, self.width, self.height)]


def nearest_centre(detections: Sequence[Detection], width: int, height: int) -> int:
    """Index of the detection whose box centre is nearest the image centre (:attr:`FaceRule.CENTRE`)."""

    def distance(index: int) -> float:
        x1, y1, x2, y2 = detections[index].box
        return float(np.hypot((x1 + x2) / 2 - width / 2, (y1 + y2) / 2 - height / 2))

    return min(range(len(detections)), key=distance)


def embed_centre_faces(
    pipeline: FacePipeline, images_dir: Path, files: Sequence[str]
) -> dict[str, npt.NDArray[np.float32] | None]:
    """Per file, the embedding of the face nearest the centre (None: no face), embedding only that
    face: the work a caller who needs one face per photo pays (and the peers' runners do)."""
    embeddings: dict[str, npt.NDArray[np.float32] | None] = {}
    for file in files:
        image = decode_image((images_dir / file).read_bytes(), max_pixels=_MAX_PIXELS)
        located = pipeline.locate(image)
        if not located:
            embeddings[file] = None
            continue
        chosen = nearest_centre([detection for detection, _ in located], image.shape[1], image.shape[0])
        embeddings[file] = pipeline.embedder.embed([located[chosen][1]])[0]
    return embeddings


def analyse_images(
    pipeline: FacePipeline,
    images_dir: Path,
    files: Sequence[str],
    *,
    with_quality: bool = True,
    on_image: Callable[[str], None] | None = None,
) -> dict[str, AnalysedImage]:
    """Run the pipeline once per distinct file; ``on_image`` is called after each file."""
    analysed: dict[str, AnalysedImage] = {}
    for file in files:
        if file not in analysed:
            image = decode_image((images_dir / file).read_bytes(), max_pixels=_MAX_PIXELS)
            faces = pipeline.analyze(image, with_quality=with_quality)
            analysed[file] = AnalysedImage(file, int(image.shape[1]), int(image.shape[0]), tuple(faces))
        if on_image is not None:
            on_image(file)
    return analysed


@dataclass(frozen=True)
class PairScores:
    """Cosine per pair (``NO_FACE_SCORE`` where a side has no usable face), labels and folds."""

    cosines: FloatArray
    labels: BoolArray
    missing: BoolArray
    folds: npt.NDArray[np.int64] | None


def _usable(image: AnalysedImage, rule: FaceRule, quality_filter: QualityFilter) -> Face | None:
    face = image.probe(rule)
    if face is None or quality_filter is QualityFilter.NONE:
        return face
    if face.quality is None or not passes(face.quality, quality_filter):
        return None
    return face


def score_pairs(
    pairs: Sequence[Pair],
    images: Mapping[str, AnalysedImage],
    rule: FaceRule = FaceRule.CENTRE,
    quality_filter: QualityFilter = QualityFilter.NONE,
) -> PairScores:
    """Cosine of each pair's probe faces. A side without a face (or below ``quality_filter``:
    reported but not matched, as in Rekognition) makes the pair ``NO_FACE_SCORE``."""
    probes = {file: _usable(image, rule, quality_filter) for file, image in images.items()}
    cosines = np.empty(len(pairs))
    missing = np.zeros(len(pairs), dtype=bool)
    for i, pair in enumerate(pairs):
        a, b = probes[pair.file_a], probes[pair.file_b]
        if a is None or b is None:
            cosines[i] = NO_FACE_SCORE
            missing[i] = True
        else:
            cosines[i] = float(np.dot(a.embedding.astype(np.float64), b.embedding.astype(np.float64)))
    with_folds = [pair.fold for pair in pairs if pair.fold is not None]
    if with_folds and len(with_folds) != len(pairs):
        raise ValueError("either every pair has a fold or none has")
    folds = np.array(with_folds, dtype=np.int64) if with_folds else None
    labels = np.array([pair.same for pair in pairs], dtype=bool)
    return PairScores(cosines=cosines, labels=labels, missing=missing, folds=folds)


# --------------------------------------------------------------------------------------------
# Metrics


def _scores_and_labels(scores: npt.ArrayLike, labels: npt.ArrayLike) -> tuple[FloatArray, BoolArray]:
    x = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(labels, dtype=bool).reshape(-1)
    if x.shape != y.shape:
        raise ValueError(f"{x.size} scores but {y.size} labels")
    if not y.any() or y.all():
        raise ValueError("need at least one same-person and one different-person pair")
    return x, y


@dataclass(frozen=True)
class Roc:
    """ROC points for thresholds from high to low: ``far[i]``, ``tar[i]`` when accepting
    ``score >= thresholds[i]``. The first point is (0, 0) at threshold +inf, the last (1, 1)."""

    far: FloatArray
    tar: FloatArray
    thresholds: FloatArray


def roc_curve(scores: npt.ArrayLike, labels: npt.ArrayLike) -> Roc:
    x, y = _scores_and_labels(scores, labels)
    thresholds = np.unique(x)[::-1]
    positives = np.sort(x[y])
    negatives = np.sort(x[~y])
    tar = (positives.size - np.searchsorted(positives, thresholds, side="left")) / positives.size
    far = (negatives.size - np.searchsorted(negatives, thresholds, side="left")) / negatives.size
    return Roc(
        far=np.concatenate([[0.0], far]),
        tar=np.concatenate([[0.0], tar]),
        thresholds=np.concatenate([[math.inf], thresholds]),
    )


def roc_auc(scores: npt.ArrayLike, labels: npt.ArrayLike) -> float:
    """Area under the ROC curve by the trapezoid rule."""
    roc = roc_curve(scores, labels)
    return float(np.sum(np.diff(roc.far) * (roc.tar[1:] + roc.tar[:-1]) / 2))


def threshold_at_far(negatives: npt.ArrayLike, far: float, *, decimals: int | None = 3) -> float:
    """Smallest threshold with at most ``floor(far * n)`` of the ``n`` negatives at or above it.

    With ``decimals`` it is rounded up (so the count can only drop) and is -1.0 when every
    negative may be accepted; without, it is -inf then.
    """
    scores = np.sort(np.asarray(negatives, dtype=np.float64))[::-1]
    allowed = math.floor(far * len(scores))
    if allowed >= len(scores):
        return -1.0 if decimals is not None else -math.inf
    just_above = float(np.nextafter(float(scores[allowed]), math.inf))
    if decimals is None:
        return just_above
    factor = 10.0**decimals
    return math.ceil(just_above * factor) / factor


def tar_at_far(scores: npt.ArrayLike, labels: npt.ArrayLike, far: float) -> tuple[float, float]:
    """(TAR, threshold) at the lowest threshold whose observed FAR is at most ``far``.

    Conservative: no interpolation between ROC points, and ties with a rejected negative score
    are rejected too.
    """
    x, y = _scores_and_labels(scores, labels)
    threshold = threshold_at_far(x[~y], far, decimals=None)
    return float(np.mean(x[y] >= threshold)), threshold


def equal_error_rate(scores: npt.ArrayLike, labels: npt.ArrayLike) -> float:
    """The rate where FAR equals FRR (= 1 - TAR), interpolated linearly along the ROC segment
    that crosses FAR = FRR."""
    roc = roc_curve(scores, labels)
    frr = 1.0 - roc.tar
    gap = roc.far - frr  # rises from -1 (nothing accepted) to 1 (everything accepted)
    i = int(np.argmax(gap >= 0))  # first point with FAR >= FRR; i >= 1 since gap[0] = -1
    g0, g1 = gap[i - 1], gap[i]
    t = 0.0 if g1 == g0 else -g0 / (g1 - g0)
    return float(roc.far[i - 1] + t * (roc.far[i] - roc.far[i - 1]))


def accuracy_at(scores: npt.ArrayLike, labels: npt.ArrayLike, threshold: float) -> float:
    x = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    return float(np.mean((x >= threshold) == y))


def best_accuracy(scores: npt.ArrayLike, labels: npt.ArrayLike) -> tuple[float, float]:
    """(best accuracy, threshold): candidates lie midway between adjacent distinct scores (and
    just outside the range); the lowest of equally good thresholds wins."""
    x = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    values = np.unique(x)
    candidates = np.concatenate([[values[0] - 1e-6], (values[:-1] + values[1:]) / 2, [values[-1] + 1e-6]])
    positives = np.sort(x[y])
    negatives = np.sort(x[~y])
    correct = (positives.size - np.searchsorted(positives, candidates, side="left")) + np.searchsorted(
        negatives, candidates, side="left"
    )
    best = int(np.argmax(correct))
    return float(correct[best] / x.size), float(candidates[best])


@dataclass(frozen=True)
class KFoldAccuracy:
    """Per held-out fold: the threshold chosen on the other folds and the accuracy on this one.

    ``std`` is the population standard deviation over folds (``ddof=0``, as InsightFace and
    facenet report it); the LFW README's standard error is ``std * sqrt(k / (k - 1)) / sqrt(k)``.
    """

    folds: tuple[int, ...]
    thresholds: tuple[float, ...]
    accuracies: tuple[float, ...]

    @property
    def mean(self) -> float:
        return float(np.mean(self.accuracies))

    @property
    def std(self) -> float:
        return float(np.std(self.accuracies))

    @property
    def threshold(self) -> float:
        """The mean of the per-fold thresholds."""
        return float(np.mean(self.thresholds))


def kfold_accuracy(scores: npt.ArrayLike, labels: npt.ArrayLike, folds: npt.ArrayLike) -> KFoldAccuracy:
    """For each fold: best threshold on all other folds, accuracy on that fold."""
    x, y = _scores_and_labels(scores, labels)
    f = np.asarray(folds).reshape(-1)
    if f.shape != x.shape:
        raise ValueError(f"{x.size} scores but {f.size} folds")
    names = tuple(int(v) for v in np.unique(f))
    if len(names) < 2:
        raise ValueError("k-fold accuracy needs at least 2 folds")
    thresholds, accuracies = [], []
    for name in names:
        held_out = f == name
        _, threshold = best_accuracy(x[~held_out], y[~held_out])
        thresholds.append(threshold)
        accuracies.append(accuracy_at(x[held_out], y[held_out], threshold))
    return KFoldAccuracy(folds=names, thresholds=tuple(thresholds), accuracies=tuple(accuracies))


@dataclass(frozen=True)
class VerificationMetrics:
    """Everything ``faceproof eval verify`` reports about one set of scored pairs."""

    pairs: int
    same_pairs: int
    accuracy: float
    accuracy_std: float
    threshold: float
    protocol: str  # "k-fold" or "best threshold on all pairs"
    folds: int
    best_accuracy_all_pairs: float
    tar_at_far_1e_2: float
    tar_at_far_1e_3: float
    eer: float
    auc: float
    kfold: KFoldAccuracy | None

    def threshold_for(self, fold: int | None) -> float:
        """The threshold a pair of ``fold`` is decided with (its held-out fold's, under k-fold)."""
        if self.kfold is None or fold is None:
            return self.threshold
        return self.kfold.thresholds[self.kfold.folds.index(fold)]

    def as_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = {
            "pairs": self.pairs,
            "accuracy": self.accuracy,
            "accuracy_std": self.accuracy_std,
            "threshold": self.threshold,
            "tar_at_far_1e-2": self.tar_at_far_1e_2,
            "tar_at_far_1e-3": self.tar_at_far_1e_3,
            "eer": self.eer,
            "auc": self.auc,
            "protocol": self.protocol,
            "folds": self.folds,
            "same_pairs": self.same_pairs,
            "best_accuracy_all_pairs": self.best_accuracy_all_pairs,
        }
        if self.kfold is not None:
            result["fold_accuracies"] = list(self.kfold.accuracies)
            result["fold_thresholds"] = list(self.kfold.thresholds)
        return result


def verification_metrics(
    scores: npt.ArrayLike, labels: npt.ArrayLike, folds: npt.ArrayLike | None = None
) -> VerificationMetrics:
    """Accuracy (k-fold when ``folds`` has 2 or more distinct values, else the best threshold
    on all pairs, with std 0), TAR at FAR 1e-2 and 1e-3, EER and AUC over all pairs."""
    x, y = _scores_and_labels(scores, labels)
    best, best_threshold = best_accuracy(x, y)
    kfold = None
    if folds is not None and np.unique(np.asarray(folds)).size >= 2:
        kfold = kfold_accuracy(x, y, folds)
    return VerificationMetrics(
        pairs=int(x.size),
        same_pairs=int(y.sum()),
        accuracy=kfold.mean if kfold else best,
        accuracy_std=kfold.std if kfold else 0.0,
        threshold=kfold.threshold if kfold else best_threshold,
        protocol="k-fold" if kfold else "best threshold on all pairs",
        folds=len(kfold.folds) if kfold else (0 if folds is None else int(np.unique(np.asarray(folds)).size)),
        best_accuracy_all_pairs=best,
        tar_at_far_1e_2=tar_at_far(x, y, 1e-2)[0],
        tar_at_far_1e_3=tar_at_far(x, y, 1e-3)[0],
        eer=equal_error_rate(x, y),
        auc=roc_auc(x, y),
        kfold=kfold,
    )


def add_precision_option(parser: argparse.ArgumentParser) -> None:
    """``--embedder-precision`` for the calibration commands (:data:`faces.runtime.Precision`)."""
    parser.add_argument(
        "--embedder-precision",
        choices=get_args(Precision),
        default="f32",
        help="bf16: where the CPU computes it natively (FACEPROOF_EMBEDDER_PRECISION)",
    )
