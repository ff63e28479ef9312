"""`faceproof eval liveness` without models: the manifest, APCER/BPCER, the seeded draw, the report."""

from __future__ import annotations

import inspect
import math
import re
from pathlib import Path

import pytest

from contracts.values import ChallengeType
from faceproof.eval_cli import liveness
from faceproof.evaluation.liveness import (
    DEFAULT_CHALLENGES,
    DEFAULT_SEED,
    ChallengeResult,
    Label,
    ManifestRow,
    PresentationResult,
    SessionResult,
    default_manifest,
    draw_for,
    error_rates,
    evaluable_types,
    read_manifest,
    report,
    write_manifest,
)
from faceproof.testing.annotate import load_video_segments
from faceproof.testing.unready import Unready
from services.liveness.challenges import RIGID_CHALLENGES, Challenge, ChallengeStatus, Verdict
from services.liveness.decision import decide
from tests.paths import DATA_DIR, REPO_ROOT

EXAMPLE = REPO_ROOT / "docs" / "liveness-eval-manifest.example.csv"


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def test_manifest_paths_are_relative_to_its_folder(tmp_path: Path) -> None:
    folder = tmp_path / "eval"
    touch(folder / "media" / "clip.mp4")
    touch(folder / "media" / "photo.PNG")
    touch(tmp_path / "elsewhere" / "print.jpg")
    absolute = touch(tmp_path / "abs" / "replay.mov")
    manifest = folder / "manifest.csv"
    manifest.write_text(
        "video,label,attack_type\n"
        "media/clip.mp4,live,\n"
        "\n"
        "# a comment row,,\n"
        "media/photo.PNG,ATTACK,print\n"
        "../elsewhere/print.jpg,attack,\n"
        f"{absolute},attack,replay\n",
        encoding="utf-8",
    )
    rows = read_manifest(manifest)
    assert [r.video for r in rows] == [
        "media/clip.mp4",
        "media/photo.PNG",
        "../elsewhere/print.jpg",
        str(absolute),
    ]
    assert [r.path.resolve() for r in rows] == [
        (folder / "media" / "clip.mp4").resolve(),
        (folder / "media" / "photo.PNG").resolve(),
        (tmp_path / "elsewhere" / "print.jpg").resolve(),
        absolute,
    ]
    assert [r.label for r in rows] == [Label.LIVE, Label.ATTACK, Label.ATTACK, Label.ATTACK]
    assert [r.attack_type for r in rows] == [None, "print", "unspecified", "replay"]
    assert [r.still for r in rows] == [False, True, True, False]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("file,label\nx.mp4,live\n", "columns"),
        ("video,label,attack_type\nx.mp4,genuine,\n", "live or attack"),
        ("video,label,attack_type\nx.mp4,live,print\n", "live row has no attack_type"),
        ("video,label,attack_type\nmissing.mp4,live,\n", "not found"),
    ],
)
def test_manifest_errors_say_what_is_wrong(tmp_path: Path, text: str, message: str) -> None:
    touch(tmp_path / "x.mp4")
    manifest = tmp_path / "m.csv"
    manifest.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        read_manifest(manifest)


def test_missing_files_can_be_allowed(tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text("video,label,attack_type\nnowhere.mp4,live,\n", encoding="utf-8")
    assert read_manifest(manifest, check_files=False)[0].path == tmp_path / "nowhere.mp4"


def test_the_default_manifest_round_trips(tmp_path: Path) -> None:
    data = tmp_path / "shared" / "data"
    for name in ("video/liveportrait_d0.mp4", "video/liveportrait_d3.mp4", "video/lestari15_real.mp4"):
        touch(data / name)
    for name in ("video/lestari15_fake.mp4", "antispoof/image_F1.jpg", "faces/people/obama.jpg"):
        touch(data / name)
    entries = default_manifest(data)
    assert [(p.name, label, kind) for p, label, kind in entries] == [
        ("liveportrait_d0.mp4", Label.LIVE, None),
        ("liveportrait_d3.mp4", Label.LIVE, None),
        ("lestari15_real.mp4", Label.LIVE, None),
        ("lestari15_fake.mp4", Label.ATTACK, "replay"),
        ("image_F1.jpg", Label.ATTACK, "print"),
        ("obama.jpg", Label.ATTACK, "print"),
    ]
    manifest = write_manifest(tmp_path / "elsewhere" / "manifest.csv", entries)
    text = manifest.read_text(encoding="utf-8")
    assert "../shared/data/video/liveportrait_d0.mp4,live,\n" in text
    rows = read_manifest(manifest)
    assert [r.path.resolve() for r in rows] == [p.resolve() for p, _, _ in entries]


def test_the_committed_example_is_the_default_manifest() -> None:
    """The example names the default manifest's files, relative to a checkout beside ../shared."""
    prefix = "../../shared/data/"
    example = read_manifest(EXAMPLE, check_files=False)
    assert all(r.video.startswith(prefix) for r in example)
    assert [(r.video.removeprefix(prefix), r.label, r.attack_type) for r in example] == [
        (path.relative_to(DATA_DIR).as_posix(), label, attack)
        for path, label, attack in default_manifest(DATA_DIR)
    ]


def test_error_rates_follow_iso_30107_3() -> None:
    rates = error_rates(
        [
            (Label.LIVE, None, True),
            (Label.LIVE, None, False),
            (Label.LIVE, None, True),
            (Label.LIVE, None, True),
            (Label.ATTACK, "print", False),
            (Label.ATTACK, "print", True),
            (Label.ATTACK, "print", False),
            (Label.ATTACK, "print", False),
            (Label.ATTACK, "replay", True),
            (Label.ATTACK, None, False),
        ]
    )
    assert rates.bona_fide == 4 and rates.bpcer == pytest.approx(0.25)  # 1 of 4 live rejected
    assert rates.attacks == {"print": 4, "replay": 1, "unspecified": 1}
    assert rates.apcer == pytest.approx({"print": 0.25, "replay": 1.0, "unspecified": 0.0})
    assert rates.apcer_max == 1.0


def test_error_rates_without_one_side() -> None:
    only_attacks = error_rates([(Label.ATTACK, "print", False)])
    assert only_attacks.bpcer is None and only_attacks.apcer == {"print": 0.0}
    only_live = error_rates([(Label.LIVE, None, False)])
    assert only_live.bpcer == 1.0 and only_live.apcer == {} and only_live.apcer_max is None


def test_challenges_are_drawn_per_file_and_reproducibly() -> None:
    types = evaluable_types(load_video_segments())
    assert set(types) == set(ChallengeType)  # six annotated types + the two the subject synthesises
    first = draw_for("clip.mp4", 3, DEFAULT_SEED, types)
    assert first == draw_for("clip.mp4", 3, DEFAULT_SEED, types)
    assert len({c.type for c in first}) == 3
    draws = {tuple(c.type for c in draw_for(f"clip{i}.mp4", 2, DEFAULT_SEED, types)) for i in range(40)}
    assert len(draws) > 10
    assert not any(all(kind in RIGID_CHALLENGES for kind in draw) for draw in draws)
    start = (0.4, 0.5)
    targets = [
        c.target
        for i in range(40)
        for c in draw_for(f"still{i}.jpg", 3, DEFAULT_SEED, types, nose_start=start)
        if c.target is not None
    ]
    assert targets
    assert all(0.22 - 1e-3 <= math.dist(start, target) <= 0.30 + 1e-3 for target in targets)


def test_the_cli_defaults_are_the_modules() -> None:
    parameters = inspect.signature(liveness).parameters
    assert parameters["seed"].default == DEFAULT_SEED
    assert parameters["challenges"].default == DEFAULT_CHALLENGES


def result(video: str, label: Label, kind: str | None, live: bool) -> PresentationResult:
    challenge = Challenge(ChallengeType.BLINK)
    verdict = (
        Verdict(ChallengeStatus.PASSED, progress=1.0, decided_at=1.0)
        if live
        else Verdict(ChallengeStatus.FAILED, progress=0.0, decided_at=6.1)
    )
    decision = decide([verdict], 1, [0.9] * 4)
    session = SessionResult(
        decision=decision,
        challenges=(ChallengeResult(challenge, verdict.status, None, 1.0, ("annotated 1-2 s",)),),
        frames=10,
        spoof_scores=(0.9,) * 4,
        identity_min_cosine=0.8,
    )
    return PresentationResult(ManifestRow(video, Path(video), label, kind), session, 1.0)


def test_the_report_has_the_documented_shape() -> None:
    results = [
        result("a.mp4", Label.LIVE, None, True),
        result("b.mp4", Label.LIVE, None, False),
        result("c.jpg", Label.ATTACK, "print", False),
    ]
    out = report(results, seed=1, challenges=1, types=[ChallengeType.BLINK])
    assert out["videos"] == 3 and out["bpcer"] == 0.5 and out["apcer"] == {"print": 0.0}
    assert out["bona_fide"] == 2 and out["attacks"] == {"print": 1} and out["types"] == ["BLINK"]
    first, second, third = out["decisions"]
    assert {"video", "label", "isLive", "confidence", "reasons"} <= first.keys()
    assert first["isLive"] is True and first["reasons"] == [] and first["confidence"] >= 50
    assert second["isLive"] is False and second["reasons"] == ["TIMEOUT"] and second["confidence"] < 50
    assert third["label"] == "attack" and third["attack_type"] == "print"
    assert first["challenges"][0] == {
        "type": "BLINK",
        "target": None,
        "status": "PASSED",
        "reason": None,
        "seconds": 1.0,
        "played": ["annotated 1-2 s"],
    }


def test_the_report_says_which_path_judged_and_why_live_rows_were_rejected() -> None:
    results = [
        result("a.mp4", Label.LIVE, None, True),
        result("b.mp4", Label.LIVE, None, False),
        result("c.jpg", Label.ATTACK, "print", False),
    ]
    default = report(results, seed=1, challenges=1, types=[ChallengeType.BLINK])
    assert default["prechecks"] is True and default["unready"] == []
    assert default["unready_after_ready"] is False
    out = report(
        results,
        seed=1,
        challenges=1,
        types=[ChallengeType.BLINK],
        prechecks=False,
        unready=[Unready.DARK],
        unready_after_ready=True,
    )
    assert out["prechecks"] is False and out["unready"] == ["dark"] and out["unready_after_ready"] is True
    # the attack's rejection is not counted; the live row's first reason is
    timeouts = {"rate": 0.5, "errors": 1, "count": 2, "ci95": [0.0126, 0.9874]}
    assert out["live_rejections"] == {"TIMEOUT": timeouts}
    assert out["decisions"][0]["started_s"] == 0.0 and out["decisions"][0]["guidance"] == []
    assert out["decisions"][0]["unready"] is None


def test_the_cli_defaults_to_the_prechecks() -> None:
    parameters = inspect.signature(liveness).parameters
    assert parameters["no_prechecks"].default is False and parameters["unready"].default is None
    assert parameters["unready_after_ready"].default is False


def test_the_docs_only_show_options_the_command_has() -> None:
    from typer.testing import CliRunner

    from faceproof.cli import app

    done = CliRunner().invoke(app, ["eval", "liveness", "--help"], env={"COLUMNS": "200"})
    assert done.exit_code == 0, done.output
    options = set(re.findall(r"(?<![\w-])--[a-z][a-z-]+", done.output))
    text = (REPO_ROOT / "docs" / "liveness.md").read_text(encoding="utf-8")
    section = text[text.index("## Evaluation: `faceproof eval liveness`") :]
    shown = set(re.findall(r"(?<![\w-])--[a-z][a-z-]+", section))
    assert shown, "the docs show no option"
    assert shown <= options, shown - options
    assert "docs/liveness-eval-manifest.example.csv" in section and EXAMPLE.is_file()
