"""Message handlers: a typed command and named dependencies in, an event out."""

from __future__ import annotations

from contracts.commands import CompareFaces
from contracts.events import FacesCompared
from contracts.values import ErrorInfo
from services.matcher.ports import FaceEngine, ImageSource
from services.matcher.scoring import ComparisonError, compare_faces


async def handle_compare(command: CompareFaces, *, engine: FaceEngine, images: ImageSource) -> FacesCompared:
    """Compare faces; a permanent problem with the inputs is answered, not retried."""
    reply = {"correlation_id": command.correlation_id, "client_id": command.client_id, "model": engine.model}
    try:
        source = await engine.analyze(await images.read(command.source), max_faces=1)
        targets = await engine.analyze(await images.read(command.target), max_faces=command.max_target_faces)
        threshold = engine.threshold if command.threshold is None else command.threshold
        result = compare_faces(source, targets, similarity=engine.similarity, threshold=threshold)
    except ComparisonError as error:
        return FacesCompared(**reply, error=ErrorInfo(code=error.code, detail=error.detail))
    return FacesCompared(
        **reply,
        similarity=result.similarity,
        match=result.match,
        threshold=result.threshold,
        source_face=result.source_face,
        target_faces=result.target_faces,
    )
