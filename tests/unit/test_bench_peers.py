from __future__ import annotations

import json

import pytest

from faceproof.bench.environment import BenchError
from faceproof.bench.peer_runner import _nearest_centre
from faceproof.bench.peers import LibraryRun, parse_peer_output, speed_ratio, summarize

LABELS = [True, True, False, False]


def peer_json(**overrides: object) -> str:
    output: dict[str, object] = {
        "library": "face_recognition",
        "version": "1.3.0",
        "dlib": "20.0.1",
        "detector": "hog",
        "metric": "euclidean distance",
        "default_threshold": 0.6,
        "images": 8,
        "seconds": 2.0,
        "cpu_seconds": 1.9,
        "no_face": ["x.jpg"],
        "distances": [0.3, 0.5, 0.7, None],
    }
    output.update(overrides)
    return json.dumps(output)


def test_peer_output_is_parsed_as_distances() -> None:
    run = parse_peer_output(peer_json(), pairs=4)
    assert run.library == "face_recognition"
    assert run.higher_is_same is False
    assert run.scores == [0.3, 0.5, 0.7, None]
    assert run.details == {"dlib": "20.0.1", "detector": "hog"}


@pytest.mark.parametrize(
    "raw",
    [peer_json(distances=[0.1]), peer_json(seconds=0), peer_json(images="many"), "not json", "{}"],
)
def test_bad_peer_output_is_an_error(raw: str) -> None:
    with pytest.raises(BenchError):
        parse_peer_output(raw, pairs=4)


def test_distances_are_scored_lower_is_same_and_missing_faces_count_as_different() -> None:
    summary = summarize(parse_peer_output(peer_json(), pairs=4), LABELS)
    # 0.3, 0.5 same; 0.7 different; the pair without a face is called "different", which is right here.
    assert summary["accuracy"] == 1.0
    assert 0.5 < summary["best_threshold"] < 0.7
    assert summary["accuracy_default_threshold"] == 1.0  # <= 0.6 is the same person
    assert summary["pairs_with_faces"] == 3
    assert summary["accuracy_pairs_with_faces"] == 1.0
    assert summary["no_face"] == 1
    assert summary["images_per_s"] == 4.0
    assert summary["cores_used"] == 0.95
    assert summary["images_per_cpu_s"] == round(8 / 1.9, 2)


def test_a_missing_face_on_a_same_person_pair_costs_accuracy() -> None:
    run = parse_peer_output(peer_json(distances=[None, 0.5, 0.7, 0.9]), pairs=4)
    summary = summarize(run, LABELS)
    assert summary["accuracy"] == 0.75
    assert summary["accuracy_pairs_with_faces"] == 1.0


def test_similarities_are_scored_higher_is_same() -> None:
    run = LibraryRun(
        library="ours",
        version="0",
        details={},
        metric="cosine similarity",
        higher_is_same=True,
        default_threshold=0.35,
        images=4,
        seconds=1.0,
        cpu_seconds=1.0,
        no_face=[],
        scores=[0.8, 0.3, 0.1, 0.2],
    )
    summary = summarize(run, LABELS)
    assert summary["accuracy"] == 1.0
    assert 0.2 < summary["best_threshold"] < 0.3
    assert summary["accuracy_default_threshold"] == 0.75  # 0.3 falls below 0.35


def test_summarize_needs_a_score_per_label() -> None:
    with pytest.raises(ValueError):
        summarize(parse_peer_output(peer_json(), pairs=4), LABELS[:3])


def test_speed_ratio_is_ours_over_theirs() -> None:
    assert speed_ratio(30.0, 10.0) == 3.0
    with pytest.raises(ValueError):
        speed_ratio(1.0, 0.0)


def test_runner_picks_the_face_nearest_the_centre() -> None:
    boxes = [(0.0, 0.0, 200.0, 200.0), (100.0, 100.0, 50.0, 50.0), (300.0, 300.0, 10.0, 10.0)]
    assert _nearest_centre(boxes, 250.0, 250.0) == 1
