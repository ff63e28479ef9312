"""The matcher's handlers (services/matcher/handlers.py) with a fake face engine and image store:
the answer a caller reads (similarity, match, threshold and its source, the faces, or the error),
addressed to the command that asked."""

from __future__ import annotations

import pytest

from contracts.commands import CompareFaces, MatchReferences
from contracts.values import ErrorCode, Fusion, ImageData, QualityFilter, ThresholdSource
from services.matcher.handlers import handle_compare, handle_match_references
from tests.unit.matcher.fakes import MODEL, FakeFaceEngine, FakeImages


def inline(name: bytes) -> ImageData:
    return ImageData(inline=name)


def compare(source: ImageData, target: ImageData, **options: object) -> CompareFaces:
    return CompareFaces(correlation_id="c-1", client_id="client-1", source=source, target=target, **options)


def match(probe: ImageData, *references: ImageData, **options: object) -> MatchReferences:
    return MatchReferences(
        correlation_id="flow-1", client_id="client-1", probe=probe, references=list(references), **options
    )


async def test_the_same_face_matches_at_the_default_rate_and_the_answer_names_its_request() -> None:
    command = compare(inline(b"alice"), inline(b"alice"))
    answer = await handle_compare(command, engine=FakeFaceEngine(), images=FakeImages())
    assert answer.error is None and answer.match is True and answer.similarity == 1.0
    assert answer.threshold is not None
    assert (answer.threshold.value, answer.threshold.source) == (0.9, ThresholdSource.DEFAULT)
    assert answer.threshold.false_match_rate == 0.001
    assert (answer.correlation_id, answer.client_id, answer.request_id) == (
        "c-1",
        "client-1",
        command.message_id,
    )
    assert answer.model == MODEL


async def test_every_target_face_is_scored_against_the_largest_source_face() -> None:
    engine = FakeFaceEngine()
    command = compare(
        inline(b"alice and bob"),
        inline(b"alice and bob"),
        max_target_faces=5,
        quality_filter=QualityFilter.HIGH,
    )
    answer = await handle_compare(command, engine=engine, images=FakeImages())
    # The largest source face is bob's: it matches bob among the targets, not alice.
    assert [(face.similarity, face.match) for face in answer.target_faces] == [(1.0, True), (0.5, False)]
    assert answer.source_face is not None and answer.source_face.box == (0.0, 0.0, 120.0, 120.0)
    assert sorted(engine.analyzed, key=str) == sorted(
        [(b"alice and bob", 1, QualityFilter.HIGH), (b"alice and bob", 5, QualityFilter.HIGH)], key=str
    )


async def test_a_requested_threshold_or_rate_decides() -> None:
    engine, images = FakeFaceEngine(), FakeImages()
    strict = await handle_compare(
        compare(inline(b"alice"), inline(b"bob"), threshold=0.4), engine=engine, images=images
    )
    assert strict.match is True and strict.similarity == 0.5
    assert strict.threshold is not None and strict.threshold.source is ThresholdSource.REQUEST
    by_rate = await handle_compare(
        compare(inline(b"alice"), inline(b"bob"), target_false_match_rate=0.01), engine=engine, images=images
    )
    assert by_rate.match is False and by_rate.threshold is not None
    assert (by_rate.threshold.value, by_rate.threshold.source) == (
        0.8,
        ThresholdSource.TARGET_FALSE_MATCH_RATE,
    )


@pytest.mark.parametrize(
    ("source", "target", "options", "code"),
    [
        (inline(b"empty room"), inline(b"alice"), {}, ErrorCode.NO_FACE_IN_SOURCE),
        (inline(b"alice"), inline(b"empty room"), {}, ErrorCode.NO_FACE_IN_TARGET),
        (inline(b"blurry alice"), inline(b"alice"), {}, ErrorCode.SOURCE_FACE_BELOW_QUALITY),
        (inline(b"alice"), inline(b"blurry alice"), {}, ErrorCode.TARGET_FACES_BELOW_QUALITY),
        (inline(b"%PDF-1.4"), inline(b"alice"), {}, ErrorCode.INVALID_IMAGE),
        (ImageData(storage_key="gone.jpg"), inline(b"alice"), {}, ErrorCode.IMAGE_NOT_FOUND),
        (
            inline(b"alice"),
            inline(b"alice"),
            {"target_false_match_rate": 0.2},
            ErrorCode.UNSUPPORTED_FALSE_MATCH_RATE,
        ),
    ],
)
async def test_inputs_that_cannot_be_compared_are_answered_with_an_error(
    source: ImageData, target: ImageData, options: dict[str, object], code: ErrorCode
) -> None:
    answer = await handle_compare(
        compare(source, target, **options), engine=FakeFaceEngine(), images=FakeImages()
    )
    assert answer.error is not None and answer.error.code is code
    assert answer.similarity is None and answer.match is None and answer.target_faces == []
    assert answer.correlation_id == "c-1" and answer.model == MODEL


async def test_stored_images_are_read_from_the_store() -> None:
    images = FakeImages(stored={"sessions/s-1/reference.jpg": b"alice"})
    answer = await handle_compare(
        compare(ImageData(storage_key="sessions/s-1/reference.jpg"), inline(b"alice")),
        engine=FakeFaceEngine(),
        images=images,
    )
    assert answer.match is True


# --------------------------------------------------------------------------- many references


async def test_any_reference_matching_is_a_match_and_the_others_are_reported() -> None:
    command = match(
        ImageData(storage_key="sessions/s-1/best.jpg"),
        ImageData(storage_key="missing.jpg"),
        inline(b"bob"),
        inline(b"alice"),
        inline(b"empty room"),
    )
    images = FakeImages(stored={"sessions/s-1/best.jpg": b"alice"})
    answer = await handle_match_references(command, engine=FakeFaceEngine(), images=images)
    assert answer.error is None and answer.match is True and answer.similarity == 1.0
    assert answer.fusion is Fusion.MAX and answer.correlation_id == "flow-1"
    assert answer.request_id == command.message_id
    missing, bob, alice, empty = answer.references
    assert missing.error is not None and missing.error.code is ErrorCode.IMAGE_NOT_FOUND
    assert (bob.similarity, alice.similarity) == (0.5, 1.0)
    assert empty.error is not None and empty.error.code is ErrorCode.NO_FACE_IN_TARGET


async def test_mean_fusion_needs_every_reference_to_be_the_person() -> None:
    command = match(inline(b"alice"), inline(b"alice"), inline(b"bob"), fusion=Fusion.MEAN)
    answer = await handle_match_references(command, engine=FakeFaceEngine(), images=FakeImages())
    assert (answer.similarity, answer.match, answer.fusion) == (0.75, False, Fusion.MEAN)


@pytest.mark.parametrize(
    ("probe", "references", "code"),
    [
        (inline(b"empty room"), [inline(b"alice")], ErrorCode.NO_FACE_IN_SOURCE),
        (ImageData(storage_key="gone.jpg"), [inline(b"alice")], ErrorCode.IMAGE_NOT_FOUND),
        (inline(b"alice"), [inline(b"empty room"), inline(b"%PDF")], ErrorCode.NO_FACE_IN_REFERENCES),
    ],
)
async def test_no_usable_probe_or_reference_is_an_error(
    probe: ImageData, references: list[ImageData], code: ErrorCode
) -> None:
    answer = await handle_match_references(
        match(probe, *references), engine=FakeFaceEngine(), images=FakeImages()
    )
    assert answer.error is not None and answer.error.code is code
    assert answer.match is None and answer.references == []


@pytest.mark.parametrize("owner", [{"session_id": "s-1"}, {"flow_id": "flow-1"}])
async def test_the_answer_names_whose_comparison_it_is_as_the_request_did(owner: dict[str, str]) -> None:
    engine, images = FakeFaceEngine(), FakeImages()
    answered = await handle_match_references(
        match(inline(b"alice"), inline(b"alice"), **owner), engine=engine, images=images
    )
    failed = await handle_match_references(
        match(inline(b"empty room"), inline(b"alice"), **owner), engine=engine, images=images
    )
    assert answered.error is None and failed.error is not None
    for answer in (answered, failed):
        assert {"session_id": answer.session_id, "flow_id": answer.flow_id} == {
            "session_id": None,
            "flow_id": None,
            **owner,
        }
