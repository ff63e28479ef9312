"""Decision thresholds per false-match rate, measured over every impostor pair of a labelled set.

The 500 different-person pairs of LFW dev-test cannot resolve a false-match rate of 1e-3. Every
pair of images of *different* people in the same set can: its 1,549 images (one folder per
person) give about 1.2 million impostor pairs, enough to read thresholds down to 1e-5.

    python -m faces.false_match --pack permissive --models-dir ../shared/models \\
        --images ../shared/data/faces/lfw-devtest
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from faces.evaluation import FaceRule, add_precision_option, analyse_images, threshold_at_far
from faces.packs import load_pack

RATES = (1e-2, 1e-3, 1e-4, 1e-5)
#: A rate is reported only when this many impostor pairs would fall above its threshold.
MIN_EXPECTED_FALSE_MATCHES = 10


@dataclass(frozen=True)
class RatePoint:
    false_match_rate: float
    cosine: float
    false_matches: int
    false_non_match_rate: float


@dataclass(frozen=True)
class FalseMatchTable:
    pack: str
    images: int
    identities: int
    impostor_pairs: int
    genuine_pairs: int
    no_face: int
    points: list[RatePoint]


def false_match_table(
    embeddings: np.ndarray, identities: Sequence[str], *, pack: str, no_face: int
) -> FalseMatchTable:
    """Thresholds for RATES from all pairs of ``embeddings`` (rows L2-normalised)."""
    labels = np.array(identities)
    scores = embeddings @ embeddings.T
    upper = np.triu_indices(len(labels), k=1)
    pair_scores = scores[upper]
    same = labels[upper[0]] == labels[upper[1]]
    impostors, genuine = pair_scores[~same], pair_scores[same]
    points = []
    for rate in RATES:
        if rate * len(impostors) < MIN_EXPECTED_FALSE_MATCHES:
            continue
        cosine = threshold_at_far(impostors, rate)
        points.append(
            RatePoint(
                false_match_rate=rate,
                cosine=cosine,
                false_matches=int(np.sum(impostors >= cosine)),
                false_non_match_rate=round(float(np.mean(genuine < cosine)), 4),
            )
        )
    return FalseMatchTable(
        pack=pack,
        images=len(labels),
        identities=len(set(identities)),
        impostor_pairs=len(impostors),
        genuine_pairs=len(genuine),
        no_face=no_face,
        points=points,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m faces.false_match", description=__doc__.split("\n")[0])
    parser.add_argument("--pack", required=True)
    parser.add_argument("--models-dir", type=Path, required=True)
    parser.add_argument("--images", type=Path, required=True, help="one folder per person")
    add_precision_option(parser)
    args = parser.parse_args(argv)
    pipeline = load_pack(args.pack, args.models_dir, embedder_precision=args.embedder_precision)
    files = sorted(str(path.relative_to(args.images)) for path in args.images.glob("*/*.jpg"))
    analysed = analyse_images(pipeline, args.images, files, with_quality=False)
    kept = [(file, face) for file in files if (face := analysed[file].probe(FaceRule.CENTRE)) is not None]
    embeddings = np.stack([np.asarray(face.embedding, dtype=np.float64) for _, face in kept])
    table = false_match_table(
        embeddings,
        [Path(file).parent.name for file, _ in kept],
        pack=args.pack,
        no_face=len(files) - len(kept),
    )
    json.dump(asdict(table), sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
