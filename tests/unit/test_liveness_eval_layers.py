"""`faceproof eval liveness` reporting without models: exact intervals, the movements column,
each layer alone and combined, per challenge type."""

from __future__ import annotations

from pathlib import Path

import pytest

from contracts.values import ChallengeType
from faceproof.evaluation.intervals import Rate, clopper_pearson
from faceproof.evaluation.liveness import (
    ChallengeResult,
    Label,
    ManifestRow,
    PresentationResult,
    SessionResult,
    challenge_rates,
    layer_rates,
    read_manifest,
)
from services.liveness.challenges import Challenge, ChallengeStatus, Verdict
from services.liveness.decision import decide
from tests.paths import REPO_ROOT

COOPERATING = REPO_ROOT / "docs" / "liveness-eval-cooperating.csv"


@pytest.mark.parametrize(
    ("k", "n", "low", "high"),
    [(0, 13, 0.0, 0.2471), (7, 9, 0.3999, 0.9719), (1, 10, 0.0025, 0.4450), (10, 10, 0.6915, 1.0)],
)
def test_clopper_pearson_gives_the_published_exact_intervals(k: int, n: int, low: float, high: float) -> None:
    got = clopper_pearson(k, n)
    assert got == pytest.approx((low, high), abs=1e-4)


def test_a_rate_says_how_many_of_how_many_and_refuses_nonsense() -> None:
    assert Rate(0, 13).to_dict() == {"rate": 0.0, "errors": 0, "count": 13, "ci95": [0.0, 0.2471]}
    assert Rate(0, 0).to_dict()["rate"] is None and str(Rate(0, 0)) == "n/a"
    assert str(Rate(7, 9)) == "7/9 = 0.78 [0.40, 0.97]"
    with pytest.raises(ValueError):
        clopper_pearson(3, 2)


def test_the_movements_column_is_read_and_checked(tmp_path: Path) -> None:
    (tmp_path / "a.mp4").write_bytes(b"")
    manifest = tmp_path / "m.csv"
    manifest.write_text(
        "video,label,attack_type,movements\n"
        "a.mp4,live,,turn_left; BLINK\na.mp4,live,,-\na.mp4,attack,print,\n",
        encoding="utf-8",
    )
    rows = read_manifest(manifest)
    assert [r.movements for r in rows] == [(ChallengeType.TURN_LEFT, ChallengeType.BLINK), (), None]
    manifest.write_text("video,label,attack_type,movements\na.mp4,live,,WAVE\n", encoding="utf-8")
    with pytest.raises(ValueError, match="line 2: unknown challenge type"):
        read_manifest(manifest)


def test_the_committed_cooperating_manifest_labels_every_live_recording() -> None:
    rows = read_manifest(COOPERATING, check_files=False)
    assert rows and all(r.label is Label.LIVE and r.movements is not None for r in rows)
    # nothing a recording can only answer by moving its picture: a plane, which the engine rejects
    assert not any(
        t in (ChallengeType.MOVE_CLOSER, ChallengeType.NOSE_TO_TARGET)
        for r in rows
        for t in r.movements or ()
    )


def presentation(label: Label, kind: str | None, passed: list[bool], spoof: float) -> PresentationResult:
    challenges = []
    verdicts = []
    for number, ok in enumerate(passed):
        status = ChallengeStatus.PASSED if ok else ChallengeStatus.FAILED
        verdicts.append(Verdict(status, progress=1.0 if ok else 0.2, decided_at=1.0 + number))
        kind_of = (ChallengeType.TURN_LEFT, ChallengeType.BLINK)[number]
        challenges.append(ChallengeResult(Challenge(kind_of), status, None if ok else "TIMEOUT", 1.0, ()))
        if not ok:
            break
    scores = (spoof,) * 4
    session = SessionResult(decide(verdicts, 2, scores), tuple(challenges), 20, scores, None)
    return PresentationResult(ManifestRow("x", Path("x"), label, kind), session, 1.0)


def test_each_layer_alone_and_combined_and_per_challenge() -> None:
    results = [
        presentation(Label.LIVE, None, [True, True], 0.9),  # live by both
        presentation(Label.LIVE, None, [True, True], 0.2),  # anti-spoofing rejects it
        presentation(Label.LIVE, None, [False], 0.9),  # a turn it did not make
        presentation(Label.ATTACK, "print", [True, True], 0.1),  # the challenges alone let it through
        presentation(Label.ATTACK, "print", [False], 0.9),  # anti-spoofing alone lets it through
    ]
    layers = layer_rates(results)
    assert (
        layers["challenges"]["bpcer"]["errors"] == 1 and layers["challenges"]["apcer"]["print"]["errors"] == 1
    )
    assert (
        layers["antispoof"]["bpcer"]["errors"] == 1 and layers["antispoof"]["apcer"]["print"]["errors"] == 1
    )
    assert layers["combined"]["bpcer"]["errors"] == 2 and layers["combined"]["apcer"]["print"]["errors"] == 0
    assert layers["combined"]["bpcer"]["count"] == 3 and layers["combined"]["bpcer"]["ci95"][1] > 0.9
    rates = challenge_rates(results)
    assert rates["TURN_LEFT"]["frr"] == Rate(1, 3).to_dict()
    assert rates["TURN_LEFT"]["far"] == Rate(1, 2).to_dict()
    assert rates["BLINK"]["frr"] == Rate(0, 2).to_dict() and rates["BLINK"]["far"] == Rate(1, 1).to_dict()
    assert rates["TURN_LEFT"]["live_failures"] == {"TIMEOUT": 1}
    assert rates["LOOK_UP"]["frr"]["rate"] is None
