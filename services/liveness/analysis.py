"""Per-frame face analysis for the liveness worker: detect, track, mesh, measure; anti-spoof on demand.

:class:`FrameAnalyzer` runs the permissive pack's detector (YuNet, MIT) every ``detect_every``
frames and, in between, tracks the face with the face mesh itself: the next crop is built from
the previous mesh's points (MediaPipe's own tracking scheme), and detection runs again at once
when the mesh's presence score drops. Tracking saves the detector's cost on most frames, but
a tracked frame cannot see a *second* face arriving: ``face_count`` on tracked frames is the
count of the last detection, so a new face is noticed at the next detection (``detect_every``
frames later at most). Call :meth:`FrameAnalyzer.reset` when frames stop being consecutive
(another session, frames out of order) and use ``detect_every=1`` where every frame must be
counted on its own.

Everything here is synchronous and CPU/GPU bound (call it from a thread pool) and reads nothing
but model files. The analyzer keeps tracking state: one instance per stream of frames.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from faces.catalog import load_catalog
from faces.checksums import file_sha256
from faces.detection import Detection, Detector
from faces.errors import ModelError
from faces.packs import DEFAULT_PACK, cpu_model, create_detector, get_pack
from faces.runtime import Model, OnnxModel
from services.liveness.antispoof import ANTISPOOF_MODELS, AntiSpoof, SpoofModel
from services.liveness.landmarks import (
    IRIS_MODEL_FILE,
    MESH_MODEL_FILE,
    EyeLandmarks,
    FaceMesh,
    MeshResult,
    region_from_box,
    region_from_points,
)
from services.liveness.lighting import measure_light
from services.liveness.measures import FaceMeasures, HeadPose, measure_face
from services.liveness.mouth_area import area_from_text, area_to_text, mouth_area
from services.liveness.stream import frame_content

__all__ = [
    "DEFAULT_DETECT_EVERY",
    "DEFAULT_PRESENCE_THRESHOLD",
    "LFW_BOX_RELATION",
    "MODEL_FILES",
    "BoxRelation",
    "FrameAnalysis",
    "FrameAnalyzer",
    "Timings",
    "box_from_mesh",
]

Box = tuple[float, float, float, float]
FloatArray = npt.NDArray[np.float32]

#: The files the liveness worker loads besides its pack's detector (``FrameAnalyzer.load``).
MODEL_FILES: Final = (MESH_MODEL_FILE, IRIS_MODEL_FILE, *(file for file, _ in ANTISPOOF_MODELS))

#: Run the detector on every 5th frame when tracking works (at the worker's 8 fps: every 0.6 s).
DEFAULT_DETECT_EVERY: Final = 5
#: The mesh's face-presence probability below which a crop holds no face (MediaPipe uses 0.5).
DEFAULT_PRESENCE_THRESHOLD: Final = 0.5


@dataclass(frozen=True)
class BoxRelation:
    """A detector's face box relative to the mesh's bounding box: the centre's offset in mesh-box
    widths and heights, and the size ratios. Tracked frames have no detector box, so their
    ``box`` is the mesh's box mapped by a relation, to mean the same as on detected frames (it
    feeds the anti-spoofing crop, which expects a detector's box, and ``relative_size``)."""

    dx: float
    dy: float
    width: float
    height: float

    @classmethod
    def between(cls, box: Box, mesh_box: Box) -> BoxRelation:
        """The relation that maps ``mesh_box`` onto ``box`` (a detection and its own mesh)."""
        mx1, my1, mx2, my2 = mesh_box
        mw, mh = max(mx2 - mx1, 1e-6), max(my2 - my1, 1e-6)
        x1, y1, x2, y2 = box
        return cls(
            dx=((x1 + x2) - (mx1 + mx2)) / 2 / mw,
            dy=((y1 + y2) - (my1 + my2)) / 2 / mh,
            width=(x2 - x1) / mw,
            height=(y2 - y1) / mh,
        )

    def box(self, mesh_box: Box) -> Box:
        """The detector-like box of a mesh whose bounding box is ``mesh_box``."""
        x1, y1, x2, y2 = mesh_box
        w, h = x2 - x1, y2 - y1
        cx, cy = (x1 + x2) / 2 + self.dx * w, (y1 + y2) / 2 + self.dy * h
        half_w, half_h = w * self.width / 2, h * self.height / 2
        return cx - half_w, cy - half_h, cx + half_w, cy + half_h


#: The relation before any detection of a track: the median YuNet box relative to the mesh box
#: over 194 LFW dev-test photos: centre 5 % of the mesh height higher, width x0.92, height x1.07
#: (10th-90th percentiles: width 0.86-0.98, height 1.04-1.10). A tracked face uses its own last
#: detection's relation instead (:class:`FrameAnalyzer`): the median is off by up to 7 % of the
#: face's width sideways on a turned face (fomm_demo_old_04, yaw about 7 degrees), and the
#: anti-spoofing score moves a lot with such a shift (issue 15, docs/liveness.md).
LFW_BOX_RELATION: Final = BoxRelation(dx=0.0, dy=-0.05, width=0.92, height=1.07)

# Mesh points for the five alignment keypoints (ArcFace order, image left first): eye centres
# as the midpoint of the eye corners, nose tip, mouth corners.
_KP_EYES: Final = ((33, 133), (362, 263))
_KP_NOSE: Final = 1
_KP_MOUTH: Final = (61, 291)


def box_from_mesh(mesh: MeshResult, relation: BoxRelation = LFW_BOX_RELATION) -> Box:
    """A detector-like face box (x1, y1, x2, y2) from the mesh's bounding box."""
    return relation.box(mesh.box)


def _keypoints(points: FloatArray) -> FloatArray:
    xy = points[:, :2].astype(np.float32)
    rows = [
        (xy[_KP_EYES[0][0]] + xy[_KP_EYES[0][1]]) / 2,
        (xy[_KP_EYES[1][0]] + xy[_KP_EYES[1][1]]) / 2,
        xy[_KP_NOSE],
        xy[_KP_MOUTH[0]],
        xy[_KP_MOUTH[1]],
    ]
    keypoints = np.stack(rows).astype(np.float32)
    keypoints.setflags(write=False)
    return keypoints


@dataclass(frozen=True)
class Timings:
    """Milliseconds spent on one frame, per stage (0 where a stage did not run)."""

    detect_ms: float = 0.0
    mesh_ms: float = 0.0
    eyes_ms: float = 0.0

    @property
    def total_ms(self) -> float:
        return self.detect_ms + self.mesh_ms + self.eyes_ms


@dataclass(frozen=True)
class FrameAnalysis:
    """What one frame shows, in raw (not mirrored) frame coordinates.

    * ``face_count``: faces the detector found (on tracked frames: at the last detection).
    * ``detected``: whether the detector ran on this frame (else the face was tracked).
    * ``box``: the primary (largest) face's box, detector-like on every frame (x1, y1, x2, y2).
    * ``detection_score``: the detector's score (None on tracked frames).
    * ``presence``: the face mesh's face-presence probability for the primary face.
    * ``measures``: head pose, eyes, mouth, nose; None when there is no face or the mesh does not
      see one (presence below the analyzer's threshold).
    * ``inside_frame``: every mesh point lies inside the frame (the whole face is visible).
    * ``frame_overflow``: how far the mesh reaches past the frame's border, as a fraction of the
      box's longer side (0 when inside), so a gate can tolerate a chin grazing the edge.
    * ``relative_size``: the box's longer side over the frame's shorter side.
    * ``keypoints``: 5x2 alignment points from the mesh (eye centres, nose tip, mouth corners,
      image-left first, the order of :class:`faces.detection.Detection`), for an embedder.
    * ``face_luma``, ``scene_luma``: mean brightness (0..255) of the face's centre and of the
      scene outside its box (:func:`services.liveness.lighting.measure_light`); None without a face.
    * ``content``: the frame's 8x8 grid of mean luma (:func:`services.liveness.stream.frame_content`),
      for the frozen-stream check; None when not measured (analyses stored before it).
    * ``landmarks``: the 468x3 mesh (not serialised).
    """

    width: int
    height: int
    face_count: int
    detected: bool
    box: Box | None = None
    detection_score: float | None = None
    presence: float | None = None
    measures: FaceMeasures | None = None
    inside_frame: bool = False
    frame_overflow: float = 0.0
    relative_size: float = 0.0
    face_luma: float | None = None
    scene_luma: float | None = None
    content: tuple[float, ...] | None = field(default=None, repr=False)
    keypoints: FloatArray | None = field(default=None, compare=False, repr=False)
    landmarks: FloatArray | None = field(default=None, compare=False, repr=False)
    timings: Timings = field(default_factory=Timings, compare=False, repr=False)

    @property
    def has_face(self) -> bool:
        """At least one face, and the mesh measured the primary one."""
        return self.face_count >= 1 and self.measures is not None

    @property
    def frame_size(self) -> tuple[int, int]:
        return self.width, self.height

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (no landmarks, no timings): what a worker may store per frame."""
        m = self.measures
        return {
            "width": self.width,
            "height": self.height,
            "face_count": self.face_count,
            "detected": self.detected,
            "box": list(self.box) if self.box is not None else None,
            "detection_score": self.detection_score,
            "presence": self.presence,
            "measures": None
            if m is None
            else {
                "yaw": m.pose.yaw,
                "pitch": m.pose.pitch,
                "roll": m.pose.roll,
                "ear_right": m.ear_right,
                "ear_left": m.ear_left,
                "mar": m.mar,
                "mouth_width": m.mouth_width,
                "nose": list(m.nose),
                "face_aspect": m.face_aspect,
                "shape": None if m.shape is None else list(m.shape),
                "mouth_area": None if m.mouth_area is None else area_to_text(m.mouth_area),
            },
            "inside_frame": self.inside_frame,
            "frame_overflow": self.frame_overflow,
            "relative_size": self.relative_size,
            "face_luma": self.face_luma,
            "scene_luma": self.scene_luma,
            "content": None if self.content is None else list(self.content),
            "keypoints": self.keypoints.tolist() if self.keypoints is not None else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FrameAnalysis:
        raw = data.get("measures")
        measures = None
        if raw is not None:
            measures = FaceMeasures(
                pose=HeadPose(yaw=float(raw["yaw"]), pitch=float(raw["pitch"]), roll=float(raw["roll"])),
                ear_right=float(raw["ear_right"]),
                ear_left=float(raw["ear_left"]),
                mar=float(raw["mar"]),
                mouth_width=float(raw["mouth_width"]),
                nose=(float(raw["nose"][0]), float(raw["nose"][1])),
                face_aspect=float(raw["face_aspect"]),
                shape=None if raw.get("shape") is None else tuple(float(v) for v in raw["shape"]),
                mouth_area=None if raw.get("mouth_area") is None else area_from_text(raw["mouth_area"]),
            )
        box = data.get("box")
        keypoints = None
        if data.get("keypoints") is not None:
            keypoints = np.asarray(data["keypoints"], dtype=np.float32).reshape(5, 2)
            keypoints.setflags(write=False)
        score = data.get("detection_score")
        presence = data.get("presence")
        face_luma, scene_luma = data.get("face_luma"), data.get("scene_luma")
        return cls(
            width=int(data["width"]),
            height=int(data["height"]),
            face_count=int(data["face_count"]),
            detected=bool(data["detected"]),
            box=None if box is None else (float(box[0]), float(box[1]), float(box[2]), float(box[3])),
            detection_score=None if score is None else float(score),
            presence=None if presence is None else float(presence),
            measures=measures,
            inside_frame=bool(data["inside_frame"]),
            frame_overflow=float(data.get("frame_overflow", 0.0)),
            relative_size=float(data["relative_size"]),
            face_luma=None if face_luma is None else float(face_luma),
            scene_luma=None if scene_luma is None else float(scene_luma),
            content=None if data.get("content") is None else tuple(float(v) for v in data["content"]),
            keypoints=keypoints,
        )


def _ms_since(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0


def _check(models_dir: Path, file: str, *, verify: bool) -> Path:
    path = models_dir / file
    if not path.is_file():
        raise ModelError(
            f"the liveness worker needs {file}, which is not in {models_dir}; copy it there with "
            f"`faceproof models fetch --from DIR` or see docs/models.md"
        )
    if verify:
        expected = load_catalog(models_dir).get(file).sha256
        actual = file_sha256(path)
        if expected is not None and actual != expected:
            raise ModelError(f"{path} has sha256 {actual}, but the catalog expects {expected}")
    return path


def _analysis(
    frame_bgr: npt.NDArray[np.uint8],
    mesh: MeshResult,
    detection: Detection | None,
    measures: FaceMeasures | None,
    *,
    face_count: int,
    detected: bool,
    content: tuple[float, ...],
    timings: Timings,
    relation: BoxRelation = LFW_BOX_RELATION,
) -> FrameAnalysis:
    """A frame's analysis from its mesh (and its detection, on a detected frame): the box (the
    detection's, or the mesh's mapped by ``relation``), how big and how far past the border the
    face is, its light."""
    height, width = frame_bgr.shape[:2]
    box = detection.box if detection is not None else box_from_mesh(mesh, relation)
    x1, y1, x2, y2 = box
    xy = mesh.points[:, :2]
    low, high = xy.min(axis=0), xy.max(axis=0)
    overflow_px = max(0.0, -float(low[0]), -float(low[1]), float(high[0]) - width, float(high[1]) - height)
    face_luma, scene_luma = measure_light(frame_bgr, box)
    return FrameAnalysis(
        width=width,
        height=height,
        face_count=face_count,
        detected=detected,
        box=box,
        detection_score=detection.score if detection is not None else None,
        presence=mesh.presence,
        measures=measures,
        inside_frame=overflow_px == 0.0,
        frame_overflow=overflow_px / max(x2 - x1, y2 - y1, 1.0),
        relative_size=max(x2 - x1, y2 - y1) / max(min(width, height), 1),
        face_luma=face_luma,
        scene_luma=scene_luma,
        content=content,
        keypoints=_keypoints(mesh.points),
        landmarks=mesh.points,
        timings=timings,
    )


class FrameAnalyzer:
    """Detect (every ``detect_every`` frames), track, mesh and measure the primary face of a stream."""

    def __init__(
        self,
        detector: Detector,
        mesh: FaceMesh,
        *,
        eyes: EyeLandmarks | None = None,
        antispoof: AntiSpoof | None = None,
        detect_every: int = DEFAULT_DETECT_EVERY,
        presence_threshold: float = DEFAULT_PRESENCE_THRESHOLD,
    ) -> None:
        if detect_every < 1:
            raise ValueError("detect_every must be at least 1")
        self.detector = detector
        self.mesh = mesh
        self.eyes = eyes
        self.antispoof = antispoof
        self.detect_every = detect_every
        self.presence_threshold = presence_threshold
        self._track: MeshResult | None = None
        self._since_detection = 0
        self._last_count = 0
        #: The tracked face's last detection box relative to its mesh (tracked frames' boxes).
        self._box_relation = LFW_BOX_RELATION
        #: The tracked face's last detection box: the mouth area's frame on every frame after it.
        self._detection_box: Box | None = None

    @classmethod
    def from_models_dir(
        cls,
        models_dir: Path,
        *,
        pack: str = DEFAULT_PACK,
        threads: int = 0,
        prefer_gpu: bool = False,
        use_iris: bool = True,
        use_antispoof: bool = True,
        detect_every: int = DEFAULT_DETECT_EVERY,
        verify_checksums: bool = True,
    ) -> FrameAnalyzer:
        """Load the pack's detector, the face mesh, the iris model and the anti-spoofing models.

        Files are checked against the model catalog (``faces/catalog.json`` plus the directory's
        ``manifest.json``), as :func:`faces.packs.load_pack` does.
        """

        catalog = load_catalog(models_dir)

        def load(file: str) -> Model:
            """On the runtime that runs it fastest (faces.packs.CPU_MODEL_RUNTIMES)."""
            path = _check(models_dir, file, verify=verify_checksums)
            return cpu_model(path, catalog.get(file).architecture, threads=threads, prefer_gpu=prefer_gpu)

        detector_file = get_pack(pack, models_dir).detector
        detector_path = _check(models_dir, detector_file, verify=verify_checksums)
        detector = create_detector(
            catalog.get(detector_file), OnnxModel(detector_path, threads=threads, prefer_gpu=prefer_gpu)
        )
        mesh = FaceMesh(load(MESH_MODEL_FILE))
        eyes = EyeLandmarks(load(IRIS_MODEL_FILE)) if use_iris else None
        antispoof = (
            AntiSpoof([SpoofModel(load(file), scale) for file, scale in ANTISPOOF_MODELS])
            if use_antispoof
            else None
        )
        return cls(detector, mesh, eyes=eyes, antispoof=antispoof, detect_every=detect_every)

    def reset(self) -> None:
        """Forget the tracked face: the next frame runs the detector."""
        self._track = None
        self._since_detection = 0
        self._last_count = 0
        self._box_relation = LFW_BOX_RELATION
        self._detection_box = None

    def analyze(
        self, frame_bgr: npt.NDArray[np.uint8], *, force_detect: bool = False, eyes: bool = True
    ) -> FrameAnalysis:
        """Analyse one ``H x W x 3`` uint8 BGR frame (the raw camera frame, not mirrored).

        ``force_detect`` runs the detector whatever the tracking state. ``eyes=False`` skips the
        iris model (about 40 % of a tracked frame's time); the eye aspect ratios then come from
        the mesh, which hardly follows a blink: skip it only on frames no BLINK challenge judges.
        """
        if frame_bgr.ndim != 3 or frame_bgr.shape[2] != 3 or frame_bgr.dtype != np.uint8:
            raise ValueError(
                f"expected an H x W x 3 uint8 BGR frame, got {frame_bgr.shape} {frame_bgr.dtype}"
            )
        height, width = frame_bgr.shape[:2]
        content = frame_content(frame_bgr)
        mesh, mesh_ms = self._tracked_mesh(frame_bgr, force_detect)
        detection: Detection | None = None
        detect_ms = 0.0
        detected = mesh is None
        if mesh is None:
            detection, mesh, detect_ms, found_ms = self._detected_mesh(frame_bgr)
            mesh_ms += found_ms
            if mesh is None:
                timings = Timings(detect_ms=detect_ms, mesh_ms=mesh_ms)
                return FrameAnalysis(
                    width=width, height=height, face_count=0, detected=True, content=content, timings=timings
                )
        self._since_detection += 1
        present = mesh.presence >= self.presence_threshold
        self._track = mesh if present else None
        if detection is not None and present:
            # the frames tracked from here get boxes like this detection's, not the LFW median's
            self._box_relation = BoxRelation.between(detection.box, mesh.box)
            self._detection_box = detection.box
        measures, eyes_ms = self._measures(frame_bgr, mesh, present=present, eyes=eyes)
        if measures is not None and self._detection_box is not None:
            measures = replace(measures, mouth_area=mouth_area(frame_bgr, self._detection_box))
        return _analysis(
            frame_bgr,
            mesh,
            detection,
            measures,
            face_count=self._last_count,
            detected=detected,
            content=content,
            timings=Timings(detect_ms=detect_ms, mesh_ms=mesh_ms, eyes_ms=eyes_ms),
            relation=self._box_relation,
        )

    def _tracked_mesh(
        self, frame_bgr: npt.NDArray[np.uint8], force_detect: bool
    ) -> tuple[MeshResult | None, float]:
        """The mesh around the tracked face's last points and its milliseconds; None when there
        is no track, a detection is due, or the face was lost (then detect on this very frame)."""
        track = self._track
        if track is None or force_detect or self._since_detection >= self.detect_every:
            return None, 0.0
        start = time.perf_counter()
        mesh = self.mesh.run(frame_bgr, region_from_points(track.points))
        mesh_ms = _ms_since(start)
        return (mesh if mesh.presence >= self.presence_threshold else None), mesh_ms

    def _detected_mesh(
        self, frame_bgr: npt.NDArray[np.uint8]
    ) -> tuple[Detection | None, MeshResult | None, float, float]:
        """Detect, then mesh the largest face: (detection, mesh, detect ms, mesh ms); no face: Nones."""
        start = time.perf_counter()
        detections = self.detector.detect(frame_bgr)
        detect_ms = _ms_since(start)
        self._since_detection = 0
        self._last_count = len(detections)
        if not detections:
            self._track = None
            self._since_detection = 1
            return None, None, detect_ms, 0.0
        detection = detections[0]
        kps = detection.keypoints
        region = region_from_box(
            detection.box, (float(kps[0, 0]), float(kps[0, 1])), (float(kps[1, 0]), float(kps[1, 1]))
        )
        start = time.perf_counter()
        mesh = self.mesh.run(frame_bgr, region)
        return detection, mesh, detect_ms, _ms_since(start)

    def _measures(
        self, frame_bgr: npt.NDArray[np.uint8], mesh: MeshResult, *, present: bool, eyes: bool
    ) -> tuple[FaceMeasures | None, float]:
        """Head pose, eyes, mouth, nose of a present face (the iris model if wanted) and the
        iris model's milliseconds."""
        if not present:
            return None, 0.0
        height, width = frame_bgr.shape[:2]
        contours = None
        eyes_ms = 0.0
        if self.eyes is not None and eyes:
            start = time.perf_counter()
            contours = self.eyes.run(frame_bgr, mesh.points)
            eyes_ms = _ms_since(start)
        return measure_face(mesh.points, (width, height), contours), eyes_ms

    def spoof_score(self, frame_bgr: npt.NDArray[np.uint8], box: Box) -> float:
        """Passive anti-spoofing ``real_score`` (0..1) of the face in ``box``; call on sampled frames."""
        if self.antispoof is None:
            raise ModelError("this analyzer was built without the anti-spoofing models")
        return self.antispoof.real_score(frame_bgr, box)
