"""Message handlers: a typed command and named dependencies in, an event out.

Problems with the inputs (not an image, no face, an unsupported rate) are answered with an
``error``, not retried; anything else raises and the broker retries, then dead-letters.
"""

from __future__ import annotations

import asyncio
from typing import Any

from contracts.commands import CompareFaces, Decision, MatchReferences
from contracts.events import FacesCompared, ReferencesMatched
from contracts.values import ErrorInfo, ImageData, Threshold
from services.matcher.ports import FaceEngine, ImageSource
from services.matcher.scoring import (
    AnalyzedFace,
    ComparisonError,
    choose_threshold,
    compare_faces,
    match_references,
)


def _threshold(command: Decision, engine: FaceEngine) -> Threshold:
    return choose_threshold(
        command.threshold,
        command.target_false_match_rate,
        default_rate=engine.default_false_match_rate,
        threshold_for_rate=engine.threshold_for_rate,
    )


def _reply(command: Decision, engine: FaceEngine) -> dict[str, Any]:
    return {
        "correlation_id": command.correlation_id,
        "client_id": command.client_id,
        "request_id": command.message_id,
        "model": engine.model,
    }


async def _faces(
    image: ImageData, command: Decision, *, engine: FaceEngine, images: ImageSource, max_faces: int | None
) -> list[AnalyzedFace]:
    data = await images.read(image)
    return await engine.analyze(data, max_faces=max_faces, quality_filter=command.quality_filter)


async def handle_compare(command: CompareFaces, *, engine: FaceEngine, images: ImageSource) -> FacesCompared:
    """Compare the largest source face with every target face."""
    try:
        threshold = _threshold(command, engine)
        source, targets = await asyncio.gather(
            _faces(command.source, command, engine=engine, images=images, max_faces=1),
            _faces(command.target, command, engine=engine, images=images, max_faces=command.max_target_faces),
        )
        result = compare_faces(source, targets, similarity=engine.similarity, threshold=threshold.value)
    except ComparisonError as error:
        return FacesCompared(**_reply(command, engine), error=ErrorInfo(code=error.code, detail=error.detail))
    return FacesCompared(
        **_reply(command, engine),
        similarity=result.similarity,
        match=result.match,
        threshold=threshold,
        source_face=result.source_face,
        target_faces=result.target_faces,
    )


async def handle_match_references(
    command: MatchReferences, *, engine: FaceEngine, images: ImageSource
) -> ReferencesMatched:
    """Is the probe any of the references? Each reference is scored; the fusion decides."""

    async def reference_faces(image: ImageData) -> list[AnalyzedFace] | ErrorInfo:
        try:
            return await _faces(image, command, engine=engine, images=images, max_faces=1)
        except ComparisonError as error:
            return ErrorInfo(code=error.code, detail=error.detail)

    try:
        threshold = _threshold(command, engine)
        probe = await _faces(command.probe, command, engine=engine, images=images, max_faces=1)
        references = await asyncio.gather(*(reference_faces(image) for image in command.references))
        result = match_references(
            probe, references, similarity=engine.similarity, threshold=threshold.value, fusion=command.fusion
        )
    except ComparisonError as error:
        return ReferencesMatched(
            **_reply(command, engine),
            session_id=command.session_id,
            flow_id=command.flow_id,
            fusion=command.fusion,
            error=ErrorInfo(code=error.code, detail=error.detail),
        )
    return ReferencesMatched(
        **_reply(command, engine),
        session_id=command.session_id,
        flow_id=command.flow_id,
        similarity=result.similarity,
        match=result.match,
        threshold=threshold,
        fusion=command.fusion,
        probe_face=result.probe_face,
        references=result.references,
    )
