"""Where the benchmark data and models are, and a description of the machine they ran on."""

from __future__ import annotations

import os
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Final

from infra.settings import Settings

__all__ = [
    "IMAGE_SUFFIXES",
    "REPO_ROOT",
    "BenchError",
    "data_dir",
    "list_images",
    "machine_info",
    "models_dir",
    "process_cpu_s",
    "shared_dir",
]

REPO_ROOT: Final = Path(__file__).resolve().parents[2]
IMAGE_SUFFIXES: Final = frozenset({".jpg", ".jpeg", ".png", ".webp"})


class BenchError(Exception):
    """A benchmark cannot run (missing data, a service that would not start); the message says why."""


def shared_dir() -> Path:
    """``../shared`` beside the checkout (the project's data and models), else beside the cwd."""
    for candidate in (REPO_ROOT.parent / "shared", Path.cwd().parent / "shared"):
        if candidate.is_dir():
            return candidate
    return REPO_ROOT.parent / "shared"


def data_dir() -> Path:
    """The face data: ``FACEPROOF_TEST_DATA_DIR`` (as the tests use it) or ``../shared/data``."""
    override = os.environ.get("FACEPROOF_TEST_DATA_DIR")
    return Path(override) if override else shared_dir() / "data"


def models_dir(explicit: Path | None, settings: Settings) -> Path:
    """``--models-dir``, else ``FACEPROOF_MODELS_DIR``, else the service's own ``var/models`` when
    ``faceproof models fetch`` has put models there (it holds what ``faceproof up`` runs, such as
    the folded fp32 SFace), else ``../shared/models``."""
    if explicit is not None:
        return explicit.resolve()
    service = settings.resolved_models_dir
    if settings.models_dir is not None or any(service.glob("*.onnx")):
        return service
    shared = shared_dir() / "models"
    return shared.resolve() if shared.is_dir() else service


def list_images(directory: Path) -> list[Path]:
    """Every JPEG, PNG and WebP file under ``directory``, sorted."""
    if not directory.is_dir():
        raise BenchError(f"image directory {directory} does not exist")
    return sorted(
        path for path in directory.rglob("*") if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES
    )


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _package_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` (all its threads) from ``/proc``; None elsewhere."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": state is fields[0]
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def machine_info() -> dict[str, Any]:
    """Cores, CPU model, RAM, Python and onnxruntime versions, and the load average right now."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return {
        "cpus": usable,
        "cpu_model": _cpu_model(),
        "memory_gib": _memory_gib(),
        "python": platform.python_version(),
        "onnxruntime": _package_version("onnxruntime"),
        "load_average": [round(value, 2) for value in load],
    }
