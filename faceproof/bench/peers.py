"""`faceproof bench peers`: our pipeline beside face_recognition and deepface, on the same pairs.

The peers live in a virtual environment of their own (``var/peers-venv`` by default), made with
``uv venv`` and filled from the pinned ``peers-requirements*.txt`` beside this file; a stamp file
with the requirements' digest lets later runs reuse it. Each peer runs in a subprocess of that
environment (:mod:`faceproof.bench.peer_runner`), one process per library, timed the same way as
ours: short warm-up, then load + detect + encode of every unique image, on one process.

Accuracy is computed here, for everyone with the same code (:func:`faces.fit_calibration.best_accuracy`
and :func:`~faces.fit_calibration.accuracy_at`), on every pair: a pair with an image where a library
found no face counts as "not the same person" (what a caller would get), so each library is scored
on the same 1,000 decisions. ``accuracy_pairs_with_faces`` leaves those pairs out instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from pydantic import BaseModel, ConfigDict, ValidationError

from faceproof.bench.environment import BenchError, machine_info

if TYPE_CHECKING:
    from faces.runtime import Precision

__all__ = [
    "NODEPS_REQUIREMENTS",
    "PEERS",
    "REQUIREMENTS",
    "RUNNER",
    "LibraryRun",
    "PeersBench",
    "ensure_peers_venv",
    "parse_peer_output",
    "run_peers_bench",
    "speed_ratio",
    "summarize",
]

HERE: Final = Path(__file__).resolve().parent
REQUIREMENTS: Final = HERE / "peers-requirements.txt"
NODEPS_REQUIREMENTS: Final = HERE / "peers-requirements-nodeps.txt"
RUNNER: Final = HERE / "peer_runner.py"
PEERS: Final = ("face_recognition", "deepface")
PEERS_PYTHON: Final = "3.11"
_STAMP: Final = ".faceproof-peers"
Log = Callable[[str], None]


@dataclass(frozen=True)
class LibraryRun:
    """What one library did: per-pair scores in its own metric and the time spent on the images."""

    library: str
    version: str
    details: dict[str, str]
    metric: str
    higher_is_same: bool
    default_threshold: float
    images: int
    seconds: float
    cpu_seconds: float
    no_face: list[str]
    scores: list[float | None]


class _PeerOutput(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)
    library: str
    version: str
    metric: str
    default_threshold: float
    images: int
    seconds: float
    cpu_seconds: float
    no_face: list[str]
    distances: list[float | None]


def parse_peer_output(raw: str, *, pairs: int) -> LibraryRun:
    """The runner's JSON as a :class:`LibraryRun` (distances: lower is the same person)."""
    try:
        output = _PeerOutput.model_validate_json(raw)
    except ValidationError as error:
        raise BenchError(f"the peer runner's output is not what was expected: {error}") from error
    if len(output.distances) != pairs:
        raise BenchError(f"{output.library}: {len(output.distances)} distances for {pairs} pairs")
    if output.seconds <= 0 or output.images <= 0:
        raise BenchError(f"{output.library}: nothing was timed")
    details = {key: str(value) for key, value in (output.model_extra or {}).items()}
    return LibraryRun(
        library=output.library,
        version=output.version,
        details=details,
        metric=output.metric,
        higher_is_same=False,
        default_threshold=output.default_threshold,
        images=output.images,
        seconds=output.seconds,
        cpu_seconds=output.cpu_seconds,
        no_face=output.no_face,
        scores=output.distances,
    )


def summarize(run: LibraryRun, labels: Sequence[bool]) -> dict[str, Any]:
    """Accuracy (best threshold; the library's default threshold) and images/s of one run.

    Scores are turned into "higher is the same person" (distances negated); a pair without a face
    gets a score below every other one, so every threshold calls it "different". Thresholds are
    reported back in the library's own metric.
    """
    from faces.fit_calibration import accuracy_at, best_accuracy

    if len(run.scores) != len(labels) or not labels:
        raise ValueError("one score per labelled pair is needed")
    sign = 1.0 if run.higher_is_same else -1.0
    default = sign * run.default_threshold
    present = [sign * score for score in run.scores if score is not None]
    floor = min([*present, default]) - 1.0
    similarities = [floor if score is None else sign * score for score in run.scores]
    accuracy, threshold = best_accuracy(similarities, labels)
    result: dict[str, Any] = {
        "library": run.library,
        "version": run.version,
        **run.details,
        "metric": run.metric,
        "pairs": len(labels),
        "pairs_with_faces": len(present),
        "accuracy": round(accuracy, 4),
        "best_threshold": round(sign * threshold, 4),
        "accuracy_default_threshold": round(accuracy_at(similarities, labels, default), 4),
        "default_threshold": run.default_threshold,
        "accuracy_pairs_with_faces": None,
        "images": run.images,
        "no_face": len(run.no_face),
        "no_face_images": run.no_face[:20],
        "seconds": round(run.seconds, 2),
        "images_per_s": round(run.images / run.seconds, 2),
        "cores_used": round(run.cpu_seconds / run.seconds, 2),
        "images_per_cpu_s": round(run.images / run.cpu_seconds, 2) if run.cpu_seconds > 0 else None,
    }
    if present:
        kept = [label for label, score in zip(labels, run.scores, strict=True) if score is not None]
        result["accuracy_pairs_with_faces"] = round(best_accuracy(present, kept)[0], 4)
    return result


def speed_ratio(ours_images_per_s: float, theirs_images_per_s: float) -> float:
    """How many times as many images per second as the peer we process (ours / theirs)."""
    if theirs_images_per_s <= 0:
        raise ValueError("the peer's images/s must be positive")
    return round(ours_images_per_s / theirs_images_per_s, 2)


def _digest() -> str:
    sha = hashlib.sha256()
    for path in (REQUIREMENTS, NODEPS_REQUIREMENTS):
        sha.update(path.read_bytes())
    return sha.hexdigest()


def _python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _run(argv: Sequence[str | Path], what: str) -> None:
    completed = subprocess.run([str(arg) for arg in argv], stdout=sys.stderr, stderr=sys.stderr, check=False)
    if completed.returncode != 0:
        raise BenchError(f"{what} failed (exit {completed.returncode}): {' '.join(map(str, argv))}")


def ensure_peers_venv(venv: Path, log: Log) -> Path:
    """The peers' interpreter, after creating or updating their virtual environment if needed."""
    python = _python(venv)
    stamp = venv / _STAMP
    digest = _digest()
    if python.is_file() and stamp.is_file() and stamp.read_text(encoding="utf-8").strip() == digest:
        return python
    uv = shutil.which("uv")
    log(f"preparing the peers' virtual environment in {venv} (needs PyPI once)")
    if uv is not None:
        if not python.is_file():
            _run([uv, "venv", "--python", PEERS_PYTHON, "--allow-existing", venv], "uv venv")
        _run([uv, "pip", "install", "--python", python, "-r", REQUIREMENTS], "uv pip install")
        _run(
            [uv, "pip", "install", "--python", python, "--no-deps", "-r", NODEPS_REQUIREMENTS],
            "uv pip install",
        )
    else:
        if not python.is_file():
            _run([sys.executable, "-m", "venv", venv], "python -m venv")
        _run([python, "-m", "pip", "install", "-r", REQUIREMENTS], "pip install")
        _run([python, "-m", "pip", "install", "--no-deps", "-r", NODEPS_REQUIREMENTS], "pip install")
    stamp.write_text(digest + "\n", encoding="utf-8")
    return python


@dataclass(frozen=True)
class PeersBench:
    pairs_csv: Path
    images_dir: Path
    models_dir: Path
    pack: str
    venv: Path
    limit: int | None = None
    threads: int = 1
    warmup: int = 5
    libraries: Sequence[str] = PEERS
    #: The embedder's precision (FACEPROOF_EMBEDDER_PRECISION; faces.runtime.Precision).
    embedder_precision: Precision = "f32"


def _run_peer(python: Path, library: str, request: dict[str, Any], pairs: int, venv: Path) -> LibraryRun:
    with tempfile.TemporaryDirectory(prefix="faceproof-peers-") as temp:
        output = Path(temp) / "result.json"
        payload = {
            **request,
            "library": library,
            "output": str(output),
            "deepface_home": str(venv / "deepface-home"),
        }
        env = {key: value for key, value in os.environ.items() if key not in {"PYTHONPATH", "PYTHONHOME"}}
        completed = subprocess.run(
            [str(python), "-I", "-W", "ignore", str(RUNNER)],
            input=json.dumps(payload),
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        if completed.returncode != 0 or not output.is_file():
            tail = (completed.stderr or completed.stdout)[-3000:]
            raise BenchError(f"{library} failed (exit {completed.returncode}):\n{tail}")
        return parse_peer_output(output.read_text(encoding="utf-8"), pairs=pairs)


def _run_ours(config: PeersBench, files: Sequence[str], pairs: Sequence[tuple[int, int]]) -> LibraryRun:
    # The same face choice as the calibration fit (nearest the image centre), so one helper serves both.
    from faces.fit_calibration import _embed_images
    from faces.packs import load_pack

    pipeline = load_pack(
        config.pack, config.models_dir, threads=config.threads, embedder_precision=config.embedder_precision
    )
    pipeline.warm_up()
    _embed_images(pipeline, config.images_dir, files[: config.warmup])
    wall, cpu = time.perf_counter(), time.process_time()
    embeddings = _embed_images(pipeline, config.images_dir, files)
    seconds, cpu_seconds = time.perf_counter() - wall, time.process_time() - cpu
    scores: list[float | None] = []
    for a, b in pairs:
        va, vb = embeddings[files[a]], embeddings[files[b]]
        scores.append(None if va is None or vb is None else float(va @ vb))
    try:
        ours_version = version("faceproof")
    except PackageNotFoundError:
        ours_version = "unknown"
    return LibraryRun(
        library="ours",
        version=ours_version,
        details={
            "pack": pipeline.info.pack,
            "models": ", ".join(model.file for model in pipeline.info.models),
            "threads": str(config.threads),
            "providers": ", ".join(pipeline.info.providers),
        },
        metric="cosine similarity",
        higher_is_same=True,
        default_threshold=pipeline.cosine_threshold,
        images=len(files),
        seconds=seconds,
        cpu_seconds=cpu_seconds,
        no_face=[file for file in files if embeddings[file] is None],
        scores=scores,
    )


def run_peers_bench(config: PeersBench, log: Log) -> dict[str, Any]:
    from faceproof.bench.stats import evenly
    from faces.fit_calibration import read_pairs

    if not config.pairs_csv.is_file():
        raise BenchError(f"pairs file {config.pairs_csv} not found")
    pairs = read_pairs(config.pairs_csv)
    if config.limit is not None:
        pairs = evenly(pairs, config.limit)
    if not pairs:
        raise BenchError("no pairs")
    files = sorted({file for pair in pairs for file in (pair.file_a, pair.file_b)})
    missing = [file for file in files if not (config.images_dir / file).is_file()]
    if missing:
        raise BenchError(
            f"{len(missing)} images of the pairs are not in {config.images_dir}, e.g. {missing[0]}"
        )
    index = {file: position for position, file in enumerate(files)}
    pair_indices = [(index[pair.file_a], index[pair.file_b]) for pair in pairs]
    labels = [pair.same for pair in pairs]
    python = ensure_peers_venv(config.venv, log)
    machine = machine_info()

    log(f"ours ({config.pack}): {len(files)} images")
    results: dict[str, Any] = {"ours": summarize(_run_ours(config, files, pair_indices), labels)}
    request = {
        "images_dir": str(config.images_dir),
        "files": files,
        "pairs": pair_indices,
        "warmup": config.warmup,
    }
    for library in config.libraries:
        log(f"{library}: {len(files)} images")
        results[library] = summarize(_run_peer(python, library, request, len(pairs), config.venv), labels)
    ours = results["ours"]
    ours["ratio_images_per_s_vs_ours"] = 1.0
    for library in config.libraries:
        peer = results[library]
        peer["ratio_images_per_s_vs_ours"] = speed_ratio(ours["images_per_s"], peer["images_per_s"])
        if ours["images_per_cpu_s"] and peer["images_per_cpu_s"]:
            peer["ratio_images_per_cpu_s_vs_ours"] = speed_ratio(
                ours["images_per_cpu_s"], peer["images_per_cpu_s"]
            )
        peer["accuracy_minus_ours"] = round(peer["accuracy"] - ours["accuracy"], 4)
    return {
        **results,
        "pairs": len(pairs),
        "images": len(files),
        "pairs_file": str(config.pairs_csv),
        "ratio_note": "ratio_*_vs_ours = ours / that library's (images/s of wall time, or per CPU second)",
        "machine": machine,
        "load_average_after": machine_info()["load_average"],
    }
