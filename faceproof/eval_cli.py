"""`faceproof eval ...`: accuracy evaluations.

``faceproof eval verify`` runs labelled pairs through the service's own face pipeline
(:func:`faces.packs.load_pack` then ``FacePipeline.analyze``) and reports verification accuracy;
the maths lives in :mod:`faces.evaluation`. See ``docs/accuracy.md``.

``faceproof eval liveness`` runs recorded videos and stills through the liveness analysis with a
scripted subject and reports APCER per attack type and BPCER (ISO/IEC 30107-3); the work lives
in :mod:`faceproof.evaluation.liveness`. See ``docs/liveness.md``.
"""

from __future__ import annotations

import csv
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from contracts.values import ChallengeType, QualityFilter
from faces.evaluation import FaceRule

if TYPE_CHECKING:
    from collections.abc import Sequence

    from faceproof.evaluation.liveness import ManifestRow
    from faceproof.testing.unready import Unready
    from faces.evaluation import AnalysedImage, Pair, PairScores, VerificationMetrics
    from faces.pipeline import FacePipeline

eval_app = typer.Typer(help="Evaluate accuracy on labelled data.", no_args_is_help=True)


@dataclass(frozen=True)
class _Run:
    pipeline: FacePipeline
    pairs: list[Pair]
    images: dict[str, AnalysedImage]
    scores: PairScores
    metrics: VerificationMetrics
    seconds: float


@eval_app.command("verify")
def verify(
    pairs: Annotated[
        Path,
        typer.Option(
            "--pairs", help="CSV with file_a,file_b,same[,fold]", exists=True, dir_okay=False, readable=True
        ),
    ],
    images: Annotated[
        Path, typer.Option("--images", help="Directory the CSV's file names are relative to", file_okay=False)
    ],
    pack: Annotated[str | None, typer.Option(help="Model pack (default: FACEPROOF_MODEL_PACK)")] = None,
    models_dir: Annotated[
        Path | None, typer.Option("--models-dir", help="Models directory (default: FACEPROOF_MODELS_DIR)")
    ] = None,
    face: Annotated[
        FaceRule,
        typer.Option(
            help="Face a pair is scored with: nearest the image centre (as the calibration fit) or the "
            "largest (as the service); the other rule is reported too"
        ),
    ] = FaceRule.CENTRE,
    folds: Annotated[
        int | None,
        typer.Option(
            min=2,
            help="Ignore the CSV's folds and make N stratified folds (for a CSV with none, or just one)",
        ),
    ] = None,
    quality_filter: Annotated[
        QualityFilter,
        typer.Option(
            "--quality-filter", help="Faces below this quality are not matched: their pairs count as errors"
        ),
    ] = QualityFilter.NONE,
    threads: Annotated[int, typer.Option(help="ONNX Runtime threads (0: its default)")] = 0,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object")] = False,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Write per-pair scores (CSV) and ROC / score plots (PNG) here"),
    ] = None,
) -> None:
    """Verification accuracy on labelled pairs, with the service's detection, alignment and embedding.

    Reports accuracy at the best threshold (k-fold when the pairs have 2 or more folds: the
    threshold is chosen on the other folds), TAR at FAR 1e-2 and 1e-3, EER, ROC AUC and the
    images where no face was found; pairs with such an image are rejected (cosine -1), never
    dropped.
    """
    from faces.errors import FaceError
    from faces.evaluation import assign_folds, read_pairs

    try:
        pair_list = read_pairs(pairs)
    except (ValueError, KeyError) as exc:
        _fail(f"cannot read {pairs}: {exc}")
    if not pair_list:
        _fail(f"{pairs} has no pairs")
    if folds is not None:
        pair_list = assign_folds(pair_list, folds)
    try:
        run = _run(pair_list, images, pack, models_dir, threads, face, quality_filter)
    except (FaceError, OSError, ValueError) as exc:
        _fail(str(exc))
    report = _report(run, face, quality_filter)
    if out is not None:
        _write_outputs(out, run, face)
        report["out"] = str(out)
    if json_output:
        typer.echo(json.dumps(report))
    else:
        typer.echo(_human(report))


def _fail(message: str) -> Any:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def _run(
    pairs: list[Pair],
    images_dir: Path,
    pack: str | None,
    models_dir: Path | None,
    threads: int,
    rule: FaceRule,
    quality_filter: QualityFilter,
) -> _Run:
    from tqdm import tqdm

    from faces.evaluation import analyse_images, score_pairs, verification_metrics
    from faces.packs import load_pack
    from infra.settings import load_settings

    settings = load_settings()
    pack = pack or settings.model_pack
    models_dir = models_dir or settings.resolved_models_dir
    pipeline = load_pack(pack, models_dir, threads=threads, embedder_precision=settings.embedder_precision)
    pipeline.warm_up()
    files = sorted({file for pair in pairs for file in (pair.file_a, pair.file_b)})
    started = time.perf_counter()
    with tqdm(total=len(files), desc=f"{pack}", unit="image", file=sys.stderr, dynamic_ncols=True) as bar:

        def advance(_: str) -> None:
            bar.update()

        analysed = analyse_images(pipeline, images_dir, files, on_image=advance)
    seconds = time.perf_counter() - started
    scores = score_pairs(pairs, analysed, rule, quality_filter)
    metrics = verification_metrics(scores.cosines, scores.labels, scores.folds)
    return _Run(pipeline, pairs, analysed, scores, metrics, seconds)


def _report(run: _Run, rule: FaceRule, quality_filter: QualityFilter) -> dict[str, Any]:
    import onnxruntime

    from faces.evaluation import accuracy_at, score_pairs, verification_metrics
    from faces.quality import passes

    no_face = sorted(file for file, image in run.images.items() if not image.faces)
    probes = {file: image.probe(rule) for file, image in run.images.items()}
    below = sorted(
        file
        for file, probe in probes.items()
        if probe is not None
        and quality_filter is not QualityFilter.NONE
        and (probe.quality is None or not passes(probe.quality, quality_filter))
    )
    other = FaceRule.LARGEST if rule is FaceRule.CENTRE else FaceRule.CENTRE
    other_scores = score_pairs(run.pairs, run.images, other, quality_filter)
    other_metrics = verification_metrics(other_scores.cosines, other_scores.labels, other_scores.folds)
    differ = sum(
        1 for image in run.images.values() if image.faces and image.probe(rule) is not image.probe(other)
    )
    pack_threshold = run.pipeline.cosine_threshold
    report: dict[str, Any] = {
        **run.metrics.as_dict(),
        "no_face": len(no_face),
        "no_face_images": no_face,
        "no_face_pairs": sum(
            1 for pair in run.pairs if not (run.images[pair.file_a].faces and run.images[pair.file_b].faces)
        ),
        "pairs_rejected_without_face": int(run.scores.missing.sum()),
        "pack": run.pipeline.info.pack,
        "models": [model.file for model in run.pipeline.info.models],
        "face": rule.value,
        "images": len(run.images),
        "seconds": round(run.seconds, 2),
        "ms_per_image": round(1000 * run.seconds / max(len(run.images), 1), 1),
        "pack_threshold": pack_threshold,
        "accuracy_at_pack_threshold": accuracy_at(run.scores.cosines, run.scores.labels, pack_threshold),
        "quality_filter": quality_filter.value,
        "below_quality": len(below),
        "quality_pass": {
            level.value: sum(
                1 for probe in probes.values() if probe and probe.quality and passes(probe.quality, level)
            )
            for level in (QualityFilter.LOW, QualityFilter.MEDIUM, QualityFilter.HIGH)
        },
        "other_face_rule": {
            "face": other.value,
            "images_where_it_picks_another_face": differ,
            "accuracy": other_metrics.accuracy,
            "accuracy_std": other_metrics.accuracy_std,
            "tar_at_far_1e-3": other_metrics.tar_at_far_1e_3,
            "auc": other_metrics.auc,
        },
        "onnxruntime": onnxruntime.__version__,
        "providers": list(run.pipeline.info.providers),
    }
    return report


def _human(report: dict[str, Any]) -> str:
    if report["protocol"] == "k-fold":
        accuracy = f"{report['accuracy']:.4f} ± {report['accuracy_std']:.4f}"
        how = f"{report['folds']}-fold: threshold chosen on the other folds"
    else:
        accuracy = f"{report['accuracy']:.4f}"
        how = "best threshold on all pairs (optimistic; give --folds 10 for a held-out estimate)"
    other = report["other_face_rule"]
    rows = [
        ("accuracy", accuracy, how),
        (
            "threshold (cosine)",
            f"{report['threshold']:.4f}",
            "mean over folds" if report["folds"] > 1 else "",
        ),
        ("TAR @ FAR 1e-2", f"{report['tar_at_far_1e-2']:.4f}", "conservative: observed FAR <= target"),
        ("TAR @ FAR 1e-3", f"{report['tar_at_far_1e-3']:.4f}", ""),
        ("EER", f"{report['eer']:.4f}", ""),
        ("ROC AUC", f"{report['auc']:.5f}", ""),
        (
            "images without a face",
            str(report["no_face"]),
            f"{report['no_face_pairs']} pair(s) rejected (cosine -1), counted in every metric",
        ),
        (
            "at the pack threshold",
            f"{report['accuracy_at_pack_threshold']:.4f}",
            f"accuracy at cosine {report['pack_threshold']:g}, the service's decision",
        ),
        (
            f"{other['face']} face instead",
            f"{other['accuracy']:.4f}",
            f"accuracy; picks another face in {other['images_where_it_picks_another_face']} image(s)",
        ),
    ]
    if report["quality_filter"] != QualityFilter.NONE.value:
        rows.append(
            (
                f"below {report['quality_filter']}",
                str(report["below_quality"]),
                f"image(s) not matched; {report['pairs_rejected_without_face']} pair(s) rejected in all",
            )
        )
    width = max(len(name) for name, _, _ in rows)
    value_width = max(len(value) for _, value, _ in rows)
    lines = [
        f"pack {report['pack']} ({', '.join(report['models'])}), face: {report['face']}, "
        f"{report['pairs']} pairs ({report['same_pairs']} same), {report['images']} images, "
        f"{report['seconds']:.1f} s ({report['ms_per_image']} ms/image)",
        "",
    ]
    lines += [f"  {name:<{width}}  {value:<{value_width}}  {note}".rstrip() for name, value, note in rows]
    return "\n".join(lines)


def _decision(run: _Run, index: int, pair: Pair) -> str:
    if run.scores.missing[index]:
        a, b = run.images[pair.file_a], run.images[pair.file_b]
        return "no_face" if not (a.faces and b.faces) else "below_quality"
    threshold = run.metrics.threshold_for(pair.fold)
    return "match" if run.scores.cosines[index] >= threshold else "no_match"


def _write_outputs(out: Path, run: _Run, rule: FaceRule) -> None:
    out.mkdir(parents=True, exist_ok=True)
    calibration = run.pipeline.calibration
    with (out / "pairs.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file_a", "file_b", "same", "fold", "cosine", "similarity", "decision"])
        for i, pair in enumerate(run.pairs):
            cosine = float(run.scores.cosines[i])
            writer.writerow(
                [
                    pair.file_a,
                    pair.file_b,
                    int(pair.same),
                    "" if pair.fold is None else pair.fold,
                    f"{cosine:.6f}",
                    f"{calibration.similarity(cosine):.6f}",
                    _decision(run, i, pair),
                ]
            )
    _plot(out, run, rule)


def _plot(out: Path, run: _Run, rule: FaceRule) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from faces.evaluation import roc_curve

    metrics, scores = run.metrics, run.scores
    title = f"{run.pipeline.info.pack}, {metrics.pairs} pairs, face: {rule.value}"
    roc = roc_curve(scores.cosines, scores.labels)
    negatives = int((~scores.labels).sum())
    figure, axes = plt.subplots(figsize=(6.4, 4.8))
    axes.step(roc.far[1:], roc.tar[1:], where="post", label=f"AUC {metrics.auc:.4f}, EER {metrics.eer:.4f}")
    for far, tar in ((1e-3, metrics.tar_at_far_1e_3), (1e-2, metrics.tar_at_far_1e_2)):
        axes.plot([far], [tar], "o", label=f"TAR {tar:.4f} at FAR {far:g}")
    axes.set_xscale("log")
    axes.set_xlim(min(1e-4, 0.5 / max(negatives, 1)), 1.0)
    axes.set_ylim(max(0.0, float(np.min(roc.tar[roc.far > 0])) - 0.02) if (roc.far > 0).any() else 0.0, 1.001)
    axes.set_xlabel(f"false accept rate (log; {negatives} different-person pairs)")
    axes.set_ylabel("true accept rate")
    axes.set_title(f"ROC: {title}")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(out / "roc.png", dpi=100)
    plt.close(figure)

    scored = ~scores.missing
    same = scores.cosines[scored & scores.labels]
    different = scores.cosines[scored & ~scores.labels]
    values = scores.cosines[scored]
    bins: list[float] | int = (
        np.linspace(float(values.min()), float(values.max()), 60).tolist() if values.size else 10
    )
    figure, axes = plt.subplots(figsize=(6.4, 4.8))
    axes.hist(different, bins=bins, alpha=0.6, label=f"different person ({different.size})")
    axes.hist(same, bins=bins, alpha=0.6, label=f"same person ({same.size})")
    chosen = "mean threshold over folds" if metrics.kfold else "best threshold"
    axes.axvline(metrics.threshold, color="black", label=f"{chosen} {metrics.threshold:.3f}")
    axes.axvline(
        run.pipeline.cosine_threshold,
        color="grey",
        linestyle="--",
        label=f"pack threshold {run.pipeline.cosine_threshold:g}",
    )
    missing = int(scores.missing.sum())
    axes.set_xlabel(
        "cosine similarity" + (f" ({missing} pair(s) without a face not shown)" if missing else "")
    )
    axes.set_ylabel("pairs")
    axes.set_title(f"Scores: {title}")
    axes.legend(loc="best")
    figure.tight_layout()
    figure.savefig(out / "scores.png", dpi=100)
    plt.close(figure)


# -- faceproof eval liveness ----------------------------------------------------------------


@eval_app.command("liveness")
def liveness(
    manifest: Annotated[
        Path | None,
        typer.Option(
            "--manifest",
            help="CSV with video,label,attack_type (label live or attack; paths relative to the CSV's "
            "folder; a jpg/png row is a still played as a static video)",
            exists=True,
            dir_okay=False,
            readable=True,
        ),
    ] = None,
    shared_data: Annotated[
        Path | None,
        typer.Option(
            "--shared-data",
            help="Instead of --manifest: build the default manifest of this data folder (../shared/data) "
            "in a temporary folder and run it",
            exists=True,
            file_okay=False,
        ),
    ] = None,
    write_manifest_to: Annotated[
        Path | None,
        typer.Option(
            "--write-manifest",
            help="With --shared-data: write the default manifest here (paths relative to it) and exit",
            dir_okay=False,
        ),
    ] = None,
    challenges: Annotated[int, typer.Option("--challenges", min=1, max=4, help="Challenges per session")] = 3,
    seed: Annotated[
        int, typer.Option("--seed", help="Seed of the challenge draw (per video: seed and file name)")
    ] = 30107,
    types: Annotated[
        str | None,
        typer.Option(
            "--types",
            help="Comma-separated challenge types to draw from (default: every type the scripted subject "
            "can play: annotated in video_segments.json, or MOVE_CLOSER / NOSE_TO_TARGET)",
        ),
    ] = None,
    max_seconds: Annotated[
        float | None,
        typer.Option("--max-seconds", min=0.5, help="Use only the first N seconds of every video"),
    ] = None,
    models_dir: Annotated[
        Path | None, typer.Option("--models-dir", help="Models directory (default: FACEPROOF_MODELS_DIR)")
    ] = None,
    threads: Annotated[int, typer.Option(help="ONNX Runtime threads (0: its default)")] = 0,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object")] = False,
    cooperating: Annotated[
        bool,
        typer.Option(
            "--cooperating",
            help="Draw each row's challenges only from its movements column (the types the recording "
            "visibly contains); live rows labelled with none of the allowed types are left out",
        ),
    ] = False,
    no_prechecks: Annotated[
        bool,
        typer.Option(
            "--no-prechecks",
            help="Judge without the worker's pre-checks: challenge 0 starts on the first frame "
            "(to compare with the default, which runs them)",
        ),
    ] = False,
    unready: Annotated[
        str | None,
        typer.Option(
            "--unready",
            help="Comma-separated unready starts (dark, far, cut_off): every live row first shows "
            "--unready-seconds of its own first frames made unready by one of them (drawn per row), "
            "then plays as usual: a user who corrects after the get-ready hint",
        ),
    ] = None,
    unready_seconds: Annotated[
        float, typer.Option("--unready-seconds", min=0.5, max=20.0, help="Length of the unready start")
    ] = 2.5,
    unready_after_ready: Annotated[
        bool,
        typer.Option(
            "--unready-after-ready",
            help="With --unready: show the unready frames once the subject is ready (after 3 of the "
            "row's first frames), so that challenge 0 starts on them: the light going out or the face "
            "slipping away as the challenges begin",
        ),
    ] = False,
) -> None:
    """Presentation-attack detection error rates (ISO/IEC 30107-3) of the liveness analysis.

    Every row is one liveness session, judged as the liveness worker judges it (8 fps, 640x480
    JPEG frames, challenge engine, identity gate, passive anti-spoofing, decision), with a
    scripted subject answering the challenges from that row's own material. Reports APCER per
    attack type, BPCER, and every presentation's decision with its reasons. See docs/liveness.md.
    """
    import tempfile

    from faceproof.evaluation.liveness import default_manifest, read_manifest, write_manifest
    from faces.errors import FaceError

    conditions = _unready(unready)
    if (manifest is None) == (shared_data is None):
        _fail("give either --manifest CSV or --shared-data DIR")
    if write_manifest_to is not None:
        if shared_data is None:
            _fail("--write-manifest needs --shared-data")
            return
        entries = default_manifest(shared_data)
        if not entries:
            _fail(f"no default videos or stills found under {shared_data}")
        written = write_manifest(write_manifest_to, entries)
        typer.echo(f"wrote {len(entries)} rows to {written}", err=True)
        return
    allowed = _challenge_types(types)
    with tempfile.TemporaryDirectory(prefix="faceproof-liveness-eval-") as scratch:
        if shared_data is not None:
            entries = default_manifest(shared_data)
            if not entries:
                _fail(f"no default videos or stills found under {shared_data}")
            manifest = write_manifest(Path(scratch) / "manifest.csv", entries)
            typer.echo(f"default manifest: {len(entries)} rows from {shared_data}", err=True)
        assert manifest is not None
        try:
            rows = read_manifest(manifest)
        except (OSError, ValueError) as exc:
            _fail(f"cannot read {manifest}: {exc}")
        if not rows:
            _fail(f"{manifest} has no rows")
        try:
            report = _liveness_run(
                rows,
                allowed,
                challenges,
                seed,
                max_seconds,
                models_dir,
                threads,
                cooperating=cooperating,
                prechecks=not no_prechecks,
                unready=conditions,
                unready_seconds=unready_seconds,
                unready_after_ready=unready_after_ready,
            )
        except (FaceError, OSError, ValueError) as exc:
            _fail(str(exc))
    if json_output:
        typer.echo(json.dumps(report))
    else:
        typer.echo(_liveness_human(report))


def _unready(raw: str | None) -> list[Unready]:
    from faceproof.testing.unready import Unready

    if raw is None:
        return []
    names = [name.strip().lower() for name in raw.split(",") if name.strip()]
    try:
        return [Unready(name) for name in names]
    except ValueError:
        _fail(f"--unready: unknown condition in {raw!r}; known: {', '.join(u.value for u in Unready)}")
    return []  # pragma: no cover


def _challenge_types(raw: str | None) -> list[ChallengeType] | None:
    if raw is None:
        return None
    names = [name.strip().upper() for name in raw.split(",") if name.strip()]
    try:
        return [ChallengeType(name) for name in names]
    except ValueError:
        _fail(
            f"--types: unknown challenge type in {raw!r}; known: {', '.join(t.value for t in ChallengeType)}"
        )
    return None  # pragma: no cover


def _liveness_run(
    rows: list[ManifestRow],
    allowed: list[ChallengeType] | None,
    challenges: int,
    seed: int,
    max_seconds: float | None,
    models_dir: Path | None,
    threads: int,
    *,
    cooperating: bool = False,
    prechecks: bool = True,
    unready: Sequence[Unready] = (),
    unready_seconds: float = 2.5,
    unready_after_ready: bool = False,
) -> dict[str, Any]:
    from faceproof.evaluation.liveness import PresentationResult, evaluable_types, evaluate, report
    from faceproof.testing.annotate import load_video_segments
    from infra.settings import load_settings
    from services.liveness.readiness import DEFAULT_READINESS
    from services.liveness.session_models import SessionModels

    settings = load_settings()
    models_dir = models_dir or settings.resolved_models_dir
    segments = load_video_segments()
    types = allowed if allowed is not None else list(evaluable_types(segments))
    if challenges > len(types):
        raise ValueError(f"{challenges} challenges asked, but only {len(types)} types are allowed")
    models = SessionModels.load(models_dir, threads=threads, embedder_precision=settings.embedder_precision)
    started = time.perf_counter()

    def progress(result: PresentationResult) -> None:
        decision = result.decision
        verdict = "live" if decision.is_live else "attack"
        reasons = ", ".join(decision.reasons) or "-"
        typer.echo(
            f"{result.row.video}: {verdict} ({decision.confidence:g}) {reasons} [{result.seconds:.1f} s]",
            err=True,
        )

    results = evaluate(
        rows,
        models,
        challenges=challenges,
        seed=seed,
        allowed=types,
        max_seconds=max_seconds,
        segments=segments,
        on_result=progress,
        cooperating=cooperating,
        readiness=DEFAULT_READINESS if prechecks else None,
        unready=unready,
        unready_seconds=unready_seconds,
        unready_after_ready=unready_after_ready,
    )
    out = report(
        results,
        seed=seed,
        challenges=challenges,
        types=types,
        prechecks=prechecks,
        unready=unready,
        unready_after_ready=unready_after_ready,
    )
    out["cooperating"] = cooperating
    out["seconds"] = round(time.perf_counter() - started, 1)
    return out


def _liveness_human(report: dict[str, Any]) -> str:
    def pct(value: float | None) -> str:
        return "n/a" if value is None else f"{100 * value:.1f} %"

    lines = [
        f"{report['videos']} presentations ({report['bona_fide']} live, "
        f"{sum(report['attacks'].values())} attacks), {report['challenges']} challenges each, "
        f"seed {report['seed']}, {report['seconds']} s",
        "",
    ]
    decisions = report["decisions"]
    width = max([len(d["video"]) for d in decisions] + [5])
    lines.append(f"  {'video':<{width}}  {'label':<14}  {'decision':<8}  {'conf':>5}  reasons / challenges")
    for d in decisions:
        label = d["label"] if d["attack_type"] is None else f"attack:{d['attack_type']}"
        steps = " ".join(
            f"{c['type']}:{'ok' if c['status'] == 'PASSED' else (c['reason'] or '-')}"
            for c in d["challenges"]
        )
        reasons = ",".join(d["reasons"]) or "-"
        verdict = "live" if d["isLive"] else "attack"
        row = f"  {d['video']:<{width}}  {label:<14}  {verdict:<8}  {d['confidence']:>5.1f}"
        lines.append(f"{row}  {reasons}  [{steps}]")
    lines.append("")
    lines.append(f"  BPCER  {pct(report['bpcer'])}  ({report['bona_fide']} live presentations)")
    for kind, rate in report["apcer"].items():
        lines.append(f"  APCER  {pct(rate)}  {kind} ({report['attacks'][kind]} presentations)")
    lines += ["", "  each layer alone and combined (errors/count = rate [95 % Clopper-Pearson]):"]
    for layer, rates in report["layers"].items():
        lines.append(f"  {layer:<10}  BPCER {_ci(rates['bpcer'])}")
        for kind, rate in rates["apcer"].items():
            lines.append(f"  {'':<10}  APCER {kind}: {_ci(rate)}")
    lines += ["", "  per challenge type (reached challenges): FRR on live rows, FAR on attacks"]
    for kind, rates in report["per_challenge"].items():
        lines.append(f"  {kind:<15} FRR {_ci(rates['frr'])}  FAR {_ci(rates['far'])}")
    return "\n".join(lines)


def _ci(rate: dict[str, Any]) -> str:
    if not rate["count"]:
        return "n/a"
    low, high = rate["ci95"]
    return f"{rate['errors']}/{rate['count']} = {rate['rate']:.2f} [{low:.2f}, {high:.2f}]"
