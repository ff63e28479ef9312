"""Model packs: a detector, an embedder (with fallbacks) and their calibration, under one name.

Built-in packs are below; a models directory's ``manifest.json`` may add packs (``packs`` list,
same fields as :class:`Pack`). :func:`load_pack` checks files and checksums and builds the
:class:`~faces.pipeline.FacePipeline`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from pydantic import BaseModel, ConfigDict, ValidationError

from faces.calibration import Calibration
from faces.catalog import Catalog, ModelEntry, load_catalog, read_manifest
from faces.checksums import file_sha256
from faces.detection import Detector, ScrfdDetector, YunetDetector
from faces.embedding import ArcFaceEmbedder, Embedder, MobileFaceNetEmbedder, SfaceEmbedder
from faces.errors import ModelError
from faces.opencv_runtime import OpenCvModel
from faces.pipeline import FacePipeline, ModelInfo, PipelineInfo
from faces.runtime import CPU, Model, OnnxModel, Precision, select_providers

__all__ = [
    "BF16_EMBEDDERS",
    "BUILTIN_PACKS",
    "CPU_MODEL_RUNTIMES",
    "DEFAULT_PACK",
    "Pack",
    "cpu_model",
    "create_detector",
    "create_embedder",
    "get_pack",
    "list_packs",
    "load_pack",
    "resolve_files",
]


@dataclass(frozen=True)
class Pack:
    """A named detector + embedder combination and its decision threshold.

    ``embedders`` lists alternatives, preferred first: the first one present is used.
    ``calibrated`` says whether ``calibration`` was fitted on LFW dev-test with these files.
    """

    name: str
    detector: str
    embedders: tuple[str, ...]
    calibration: Calibration
    licence_summary: str
    commercial_use: bool
    calibrated: bool
    description: str = ""

    @property
    def cosine_threshold(self) -> float:
        return self.calibration.cosine_threshold

    @property
    def files(self) -> tuple[str, ...]:
        return (self.detector, *self.embedders)


DEFAULT_PACK: Final = "permissive"

# Calibration constants, fitted on 2026-12-05 (CPU, onnxruntime 1.31, OpenCV 5.0) with
#   .venv/bin/python -m faces.fit_calibration --pack NAME --models-dir var/models \
#       --pairs ../shared/data/faces/lfw-devtest/pairs.csv --images ../shared/data/faces/lfw-devtest
# on LFW View 1 dev-test (500 same + 500 different pairs). cosine_threshold is the smallest
# threshold (rounded up to 3 decimals) with at most 0.1 % of different-person pairs at or above
# it: with 500 such pairs, zero false accepts, so "FAR 1e-3" is a target, not a measurement.
# permissive (YuNet + SFace), refitted 2026-12-05 (issue 16) with the folded fp32 SFace (the same
#   embeddings as the int8bq file to 1e-5, as the official fp32 file per ../shared/models) on
#   OpenCV's DNN module, and YuNet at 416x416 for these 250x250 photos (was 640x640):
#   1000/1000 pairs used; best accuracy 0.992 (cosine 0.336); at 0.391: accuracy 0.992,
#   0 false accepts, 8 false rejects (TAR 0.984).
# Thresholds per false-match rate (the default threshold is the one for 1e-3), measured on
# 2026-12-05 over every pair of images of different people in LFW dev-test (about 1.2 million
# impostor pairs, 983 genuine) with `python -m faces.false_match --pack NAME --models-dir
# var/models --images ../shared/data/faces/lfw-devtest` (docs/models.md has the table): FNMR at
# 1e-3 0.0092 (0.0122 before), at 1e-4 0.0163 (the same).
PERMISSIVE_CALIBRATION: Final = Calibration(
    a=21.6769,
    b=-7.8344,
    cosine_threshold=0.37,
    fmr_cosines=((1e-2, 0.303), (1e-3, 0.37), (1e-4, 0.427), (1e-5, 0.483)),
)
# mobilefacenet (SCRFD det_500m + SE-MobileFaceNet), refitted 2026-12-05 with detection at each
#   image's own scale (issue 16): 1000/1000 pairs used (a face in every image; at 640 SCRFD found
#   none in 3); best accuracy 0.995 (cosine 0.306); at 0.282: accuracy 0.995, 0 of 500 false
#   accepts, 5 false rejects (TAR 0.990). All-pairs FNMR at FMR 1e-3: 0.0081 (0.0132 before).
MOBILEFACENET_CALIBRATION: Final = Calibration(
    a=21.3235,
    b=-6.3818,
    cosine_threshold=0.292,
    fmr_cosines=((1e-2, 0.218), (1e-3, 0.292), (1e-4, 0.359), (1e-5, 0.419)),
)
# Not fitted: the InsightFace ArcFace files (w600k_*) cannot be obtained in this environment.
# A conservative estimate of the same shape; refit with the command above after
# `faceproof models fetch --pack buffalo_sc` (or buffalo_l) and replace it.
ARCFACE_ESTIMATE: Final = Calibration(a=20.0, b=-6.0, cosine_threshold=0.3)

_INSIGHTFACE_TERMS: Final = "InsightFace pretrained weights: non-commercial research use only."

BUILTIN_PACKS: Final[Mapping[str, Pack]] = {
    pack.name: pack
    for pack in (
        Pack(
            name="permissive",
            detector="face_detection_yunet_2023mar.onnx",
            embedders=(
                "face_recognition_sface_2021dec.onnx",
                "face_recognition_sface_2021dec_int8bq_folded.onnx",
                "face_recognition_sface_2021dec_int8bq_ortfix.onnx",
            ),
            calibration=PERMISSIVE_CALIBRATION,
            licence_summary="YuNet (MIT) + SFace (Apache-2.0): commercial use allowed.",
            commercial_use=True,
            calibrated=True,
            description="OpenCV Zoo YuNet detector and SFace 128-D embedder (fp32 preferred, int8 fallback).",
        ),
        Pack(
            name="mobilefacenet",
            detector="det_500m.onnx",
            embedders=("se_mobilefacenet_arcface_emb256.onnx",),
            calibration=MOBILEFACENET_CALIBRATION,
            licence_summary=(
                "SCRFD det_500m is InsightFace non-commercial research only; the SE-MobileFaceNet weights "
                "are MIT but were trained on MS1M, a research-only data set. Not for commercial use."
            ),
            commercial_use=False,
            calibrated=True,
            description="SCRFD-500MF detector and SE-MobileFaceNet ArcFace 256-D embedder.",
        ),
        Pack(
            name="buffalo_sc",
            detector="det_500m.onnx",
            embedders=("w600k_mbf.onnx",),
            calibration=ARCFACE_ESTIMATE,
            licence_summary=_INSIGHTFACE_TERMS,
            commercial_use=False,
            calibrated=False,
            description="InsightFace buffalo_sc: SCRFD-500MF and ArcFace MobileFaceNet (WebFace600K), 512-D.",
        ),
        Pack(
            name="buffalo_l",
            detector="det_10g.onnx",
            embedders=("w600k_r50.onnx",),
            calibration=ARCFACE_ESTIMATE,
            licence_summary=_INSIGHTFACE_TERMS,
            commercial_use=False,
            calibrated=False,
            description="InsightFace buffalo_l: SCRFD-10GF and ArcFace ResNet-50 (WebFace600K), 512-D.",
        ),
    )
}


class _CalibrationSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    a: float
    b: float
    cosine_threshold: float


class _PackSpec(BaseModel):
    """A pack in a models directory's ``manifest.json``."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str
    detector: str
    embedders: tuple[str, ...]
    calibration: _CalibrationSpec
    licence_summary: str
    commercial_use: bool
    calibrated: bool = False
    description: str = ""

    def to_pack(self) -> Pack:
        if not self.embedders:
            raise ValueError(f"pack {self.name!r} lists no embedder")
        return Pack(
            name=self.name,
            detector=self.detector,
            embedders=self.embedders,
            calibration=Calibration(**self.calibration.model_dump()),
            licence_summary=self.licence_summary,
            commercial_use=self.commercial_use,
            calibrated=self.calibrated,
            description=self.description,
        )


def list_packs(models_dir: Path | None = None) -> list[Pack]:
    """Built-in packs, then (or replaced by) the packs of ``models_dir/manifest.json``."""
    packs = dict(BUILTIN_PACKS)
    for raw in read_manifest(models_dir).packs:
        try:
            pack = _PackSpec.model_validate(raw).to_pack()
        except (ValidationError, ValueError) as exc:
            raise ModelError(f"invalid pack in manifest.json: {exc}") from exc
        packs[pack.name] = pack
    return list(packs.values())


def get_pack(name: str, models_dir: Path | None = None) -> Pack:
    packs = {pack.name: pack for pack in list_packs(models_dir)}
    try:
        return packs[name]
    except KeyError:
        raise ModelError(f"unknown model pack {name!r}; known packs: {', '.join(sorted(packs))}") from None


def _missing(pack: Pack, wanted: str, models_dir: Path) -> ModelError:
    return ModelError(
        f"pack {pack.name!r} needs {wanted}, which is not in {models_dir}; get it with "
        f"`faceproof models fetch --pack {pack.name}` (download) or "
        f"`faceproof models fetch --pack {pack.name} --from DIR` (copy from a local directory)"
    )


def resolve_files(pack: Pack, models_dir: Path) -> tuple[Path, Path]:
    """(detector, embedder) paths in ``models_dir``; the first embedder alternative present wins."""
    detector = models_dir / pack.detector
    if not detector.is_file():
        raise _missing(pack, pack.detector, models_dir)
    for file in pack.embedders:
        if (models_dir / file).is_file():
            return detector, models_dir / file
    raise _missing(pack, " or ".join(pack.embedders), models_dir)


def _verified_sha256(path: Path, entry: ModelEntry, *, verify: bool) -> str:
    actual = file_sha256(path)
    if verify and entry.sha256 is not None and actual != entry.sha256:
        raise ModelError(
            f"{path} has sha256 {actual}, but the catalog expects {entry.sha256}: the file is damaged or a "
            f"different model. Fetch it again, or describe your own model in manifest.json."
        )
    return actual


OPENVINO_RUNTIME: Final = "openvino"
OPENCV_RUNTIME: Final = "opencv"

#: Models (by architecture) that run faster on another CPU runtime than onnxruntime, for the same output:
#: the runtimes to try, in order; the first that is installed and reads the file runs the model,
#: onnxruntime when none does. SFace (the folded fp32 file, one thread): OpenVINO 7.6-8.5 ms of CPU per
#: face, OpenCV's DNN module 14-16, onnxruntime 20-22 (docs/benchmarks.md, "OpenVINO"); OpenVINO cannot
#: read the int8bq file, which OpenCV runs. The liveness worker's per-frame models (one thread, thread
#: CPU per call): the face mesh 0.9-1.0 ms on OpenVINO against 3.3-3.6 on onnxruntime, each MiniFASNet
#: 0.9 against 3.4-3.8, the iris model 1.1 against 2.0, the same outputs to 1e-6 (docs/benchmarks.md,
#: "CPU per frame"). SE-MobileFaceNet (the `mobilefacenet` pack): 6.9-7.4 ms on OpenVINO against 12.7 on
#: onnxruntime, the same cosines to 1e-4 (docs/models.md, "bfloat16 embeddings").
#: Where a GPU is preferred and onnxruntime has one, it runs them (CUDA / TensorRT).
#: Which model runs where, and why: docs/models.md.
CPU_MODEL_RUNTIMES: Final[Mapping[str, tuple[str, ...]]] = {
    "sface": (OPENVINO_RUNTIME, OPENCV_RUNTIME),
    "mobilefacenet": (OPENVINO_RUNTIME,),
    "mediapipe_face_mesh": (OPENVINO_RUNTIME,),
    "mediapipe_iris": (OPENVINO_RUNTIME,),
    "minifasnet": (OPENVINO_RUNTIME,),
}

#: Embedders (by architecture) whose pack calibration holds in bfloat16, measured on LFW dev-test's
#: 1.2 M impostor pairs (docs/models.md, "bfloat16 embeddings"): SFace's thresholds per false-match
#: rate move by at most 0.001. SE-MobileFaceNet's move by up to 0.024 (1e-3: 0.292 -> 0.309), so it
#: runs fp32 whatever precision is asked.
BF16_EMBEDDERS: Final = frozenset({"sface"})

#: Detectors exported at one fixed input size that run at any size once it is freed (see faces.detection).
FREE_SIZE_DETECTORS: Final = frozenset({"yunet"})


def _on_openvino(path: Path, threads: int, precision: Precision) -> Model:
    from faces.openvino_runtime import OpenVinoModel  # ImportError where openvino is not installed

    return OpenVinoModel(path, threads=threads, precision=precision)


def _on_opencv(path: Path, threads: int, precision: Precision) -> Model:
    return OpenCvModel(path, threads=threads)  # fp32 only


_CPU_LOADERS: Final[Mapping[str, Callable[[Path, int, Precision], Model]]] = {
    OPENVINO_RUNTIME: _on_openvino,
    OPENCV_RUNTIME: _on_opencv,
}


def cpu_model(
    path: Path,
    architecture: str,
    *,
    prefer_gpu: bool = False,
    threads: int = 0,
    precision: Precision = "f32",
) -> Model:
    """The model on its runtime: see :data:`CPU_MODEL_RUNTIMES`. A GPU preferred where onnxruntime
    has none (the services' default, ``FACEPROOF_PREFER_GPU``) still runs on the CPU: the faster CPU
    runtime then. ``precision``: see :data:`faces.runtime.Precision`."""
    if select_providers(prefer_gpu) == [CPU]:
        for runtime in CPU_MODEL_RUNTIMES.get(architecture, ()):
            try:
                return _CPU_LOADERS[runtime](path, threads, precision)
            except (ImportError, ModelError):
                continue  # not installed, or it cannot read this file: the next runtime
    return OnnxModel(path, prefer_gpu=prefer_gpu, threads=threads)


def create_detector(entry: ModelEntry, model: OnnxModel) -> Detector:
    if entry.architecture == "scrfd":
        return ScrfdDetector(model)
    if entry.architecture == "yunet":
        return YunetDetector(model)
    raise ModelError(f"{entry.file}: {entry.architecture} is not a face detector architecture")


def create_embedder(entry: ModelEntry, model: Model) -> Embedder:
    if entry.architecture == "sface":
        return SfaceEmbedder(model)
    if entry.architecture == "mobilefacenet":
        return MobileFaceNetEmbedder(model)
    if entry.architecture == "arcface":
        return ArcFaceEmbedder(model)
    raise ModelError(f"{entry.file}: {entry.architecture} is not a face embedder architecture")


def load_pack(
    name: str,
    models_dir: Path,
    *,
    prefer_gpu: bool = False,
    threads: int = 0,
    verify_checksums: bool = True,
    embedder_precision: Precision = "f32",
) -> FacePipeline:
    """Check the pack's files (presence, sha256 against the catalog) and load its ONNX sessions.
    ``embedder_precision``: the embedder's (see :data:`faces.runtime.Precision`) where its
    calibration holds in it (:data:`BF16_EMBEDDERS`), fp32 otherwise; the detector runs fp32."""
    pack = get_pack(name, models_dir)
    catalog: Catalog = load_catalog(models_dir)
    detector_path, embedder_path = resolve_files(pack, models_dir)
    detector_entry = catalog.get(detector_path.name)
    embedder_entry = catalog.get(embedder_path.name)
    infos = []
    for path, entry in ((detector_path, detector_entry), (embedder_path, embedder_entry)):
        sha256 = _verified_sha256(path, entry, verify=verify_checksums)
        infos.append(
            ModelInfo(
                file=entry.file,
                task=entry.task,
                architecture=entry.architecture,
                sha256=sha256,
                licence=entry.licence.id,
                commercial_use=entry.commercial_use,
            )
        )
    detector_model = OnnxModel(
        detector_path,
        prefer_gpu=prefer_gpu,
        threads=threads,
        free_spatial_dims=detector_entry.architecture in FREE_SIZE_DETECTORS,
    )
    embedding_model = cpu_model(
        embedder_path,
        embedder_entry.architecture,
        prefer_gpu=prefer_gpu,
        threads=threads,
        precision=embedder_precision if embedder_entry.architecture in BF16_EMBEDDERS else "f32",
    )
    detector = create_detector(detector_entry, detector_model)
    embedder = create_embedder(embedder_entry, embedding_model)
    info = PipelineInfo(
        pack=pack.name,
        licence_summary=pack.licence_summary,
        commercial_use=pack.commercial_use,
        calibrated=pack.calibrated,
        cosine_threshold=pack.calibration.cosine_threshold,
        similarity_threshold=pack.calibration.threshold,
        embedding_dimension=embedder.dimension,
        models=tuple(infos),
        providers=tuple(dict.fromkeys([*detector_model.providers, *embedding_model.providers])),
    )
    return FacePipeline(detector, embedder, pack.calibration, info)
