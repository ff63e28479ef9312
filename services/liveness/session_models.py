"""The models one liveness worker shares between its sessions, loaded once by the composition root."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from faces.embedding import Embedder
from faces.packs import DEFAULT_PACK, load_pack
from faces.runtime import Precision
from services.liveness.analysis import FrameAnalyzer

__all__ = ["SessionModels"]


@dataclass(frozen=True)
class SessionModels:
    """What a session needs: the frame analyzer (with anti-spoofing), an embedder and its threshold."""

    analyzer: FrameAnalyzer
    embedder: Embedder
    identity_threshold: float

    @classmethod
    def load(
        cls,
        models_dir: Path,
        *,
        pack: str = DEFAULT_PACK,
        threads: int = 0,
        prefer_gpu: bool = False,
        verify_checksums: bool = True,
        embedder_precision: Precision = "f32",
    ) -> SessionModels:
        """Load the pack's analyzer and embedder (blocking: call it off the event loop or at start-up);
        ``embedder_precision`` is the identity check's embedder's (the analyzer's models run fp32)."""
        analyzer = FrameAnalyzer.from_models_dir(
            models_dir, pack=pack, threads=threads, prefer_gpu=prefer_gpu, verify_checksums=verify_checksums
        )
        pipeline = load_pack(
            pack,
            models_dir,
            prefer_gpu=prefer_gpu,
            threads=threads,
            verify_checksums=verify_checksums,
            embedder_precision=embedder_precision,
        )
        return cls(analyzer, pipeline.embedder, pipeline.cosine_threshold)
