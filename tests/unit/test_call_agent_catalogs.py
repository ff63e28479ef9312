"""Catalogs: every language has every text; the instruction state turns events into messages."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from contracts.events import ChallengeIssued, ChallengeVerdict, LivenessDecided, SessionFinished
from contracts.languages import SUPPORTED_LANGUAGES
from contracts.values import ChallengeType, Precheck, SessionStatus
from services.call_agent.catalog import available_languages, catalog_files, load_catalog, required_keys
from services.call_agent.instructions import HIDDEN_REASONS, Instructions

LANGUAGES = ("en", "es", "fr", "de", "pt", "it", "nl", "pl")


def test_the_required_languages_are_there() -> None:
    assert set(LANGUAGES) <= set(available_languages())


def test_english_has_every_required_key() -> None:
    assert required_keys() <= set(load_catalog("en").texts)


@pytest.mark.parametrize("language", available_languages())
def test_every_catalog_has_exactly_the_keys_of_english_and_no_empty_text(language: str) -> None:
    catalog = load_catalog(language)
    assert catalog.language == language
    assert set(catalog.texts) == set(load_catalog("en").texts)
    assert all(text.strip() for text in catalog.texts.values())
    if language != "en":  # translated, not copied
        same = [k for k, v in catalog.texts.items() if v == load_catalog("en").texts[k]]
        assert len(same) <= 2, same


def test_every_challenge_and_terminal_status_has_a_text() -> None:
    catalog = load_catalog("de")
    for challenge in ChallengeType:
        assert catalog.challenge(challenge) != f"challenge.{challenge.value}"
    for status in (SessionStatus.SUCCEEDED, SessionStatus.FAILED, SessionStatus.EXPIRED):
        assert not catalog.finished(status).startswith("finished.")


@pytest.mark.parametrize(("asked", "chosen"), [("es-ES", "es"), ("PT_br", "pt"), ("xx", "en"), ("", "en")])
def test_language_tags_fall_back_to_english(asked: str, chosen: str) -> None:
    assert load_catalog(asked).language == chosen


def issued(
    index: int, challenge: ChallengeType = ChallengeType.TURN_LEFT, target: tuple[float, float] | None = None
) -> ChallengeIssued:
    return ChallengeIssued(
        correlation_id="s",
        session_id="s",
        index=index,
        count=3,
        challenge=challenge,
        deadline_ms=8000,
        target=target,
    )


def turn_left_verdict(*, passed: bool, reason: str | None = None) -> ChallengeVerdict:
    """The worker's verdict on challenge 0 of 3, TURN_LEFT."""
    return ChallengeVerdict(
        correlation_id="s",
        session_id="s",
        index=0,
        count=3,
        challenge=ChallengeType.TURN_LEFT,
        passed=passed,
        reason=reason,
    )


def test_instruction_messages_are_camel_case_json_in_the_session_language() -> None:
    state = Instructions(load_catalog("es"))
    assert state.screen.text == "Mira a la cámara"
    message = state.challenge(issued(0), now=10.0)
    assert message == {
        "type": "challenge",
        "index": 0,
        "count": 3,
        "challenge": "TURN_LEFT",
        "text": "Gira la cabeza a la izquierda",
        "deadlineMs": 8000,
        "target": None,
    }
    json.dumps(message)
    assert state.screen.seconds_left(13.2) == 5
    assert state.screen.progress() == "1/3"
    verdict = state.verdict(
        turn_left_verdict(passed=False, reason="WRONG_DIRECTION"),
        now=12.0,
    )
    assert verdict is not None
    assert verdict["type"] == "verdict" and verdict["passed"] is False
    assert verdict["reason"] == "WRONG_DIRECTION"
    assert "Dirección equivocada" in verdict["text"]
    target = state.challenge(issued(1, ChallengeType.NOSE_TO_TARGET, target=(0.2, 0.7)), now=12.5)
    assert target is not None and target["target"] == [0.2, 0.7]
    assert state.screen.notice is not None  # the verdict stays visible beside the next instruction
    assert state.challenge(issued(0), now=13.0) is None  # stale
    decided = state.decided(
        LivenessDecided(correlation_id="s", session_id="s", is_live=False, confidence=20.0), now=14.0
    )
    assert decided == {"type": "decided", "isLive": False, "text": "Comprobando…"}
    finished = state.session_finished(
        SessionFinished(
            correlation_id="s",
            session_id="s",
            status=SessionStatus.FAILED,
            reasons=["WRONG_DIRECTION"],
            occurred_at=datetime.now(UTC),
        )
    )
    assert finished == {
        "type": "finished",
        "status": "FAILED",
        "reasons": ["WRONG_DIRECTION"],
        "text": "La verificación ha fallado",
        "detail": "Dirección equivocada",
    }
    assert state.screen.final and state.screen.succeeded is False
    assert state.challenge(issued(2), now=15.0) is None  # nothing after the end
    assert state.finish(SessionStatus.EXPIRED, ["EXPIRED"]) is None


def session_reason_codes() -> set[str]:
    """Every reason code a session can end with first, from the modules that raise them (the
    comparison's codes only ever follow the decision's)."""
    from domain.cameras import VIRTUAL_CAMERA
    from domain.sessions import ERASED, EXPIRED
    from services.liveness.challenges import FailureReason
    from services.liveness.decision import INSUFFICIENT_EVIDENCE, NOT_READY
    from services.liveness.stream import FROZEN_STREAM, MEDIA_CLOCK_AHEAD

    return (
        {r.value for r in FailureReason}
        | {p.value for p in Precheck}
        | {INSUFFICIENT_EVIDENCE, NOT_READY, FROZEN_STREAM, MEDIA_CLOCK_AHEAD}
        | {VIRTUAL_CAMERA, EXPIRED, ERASED}
    )


@pytest.mark.parametrize("language", available_languages())
def test_every_reason_the_user_is_told_has_a_text_in_every_language(language: str) -> None:
    catalog = load_catalog(language)
    shown = session_reason_codes() - HIDDEN_REASONS
    missing = sorted(code for code in shown if f"reason.{code}" not in catalog.texts)
    assert not missing, missing
    assert not [code for code in HIDDEN_REASONS if f"reason.{code}" in catalog.texts]


def test_the_browser_is_never_told_which_detector_caught_a_spoof() -> None:
    """What a user presenting a replay, a deepfake or a still would read to learn what to defeat:
    the data channel's verdict and finished messages, and the instruction video's screens."""
    state = Instructions(load_catalog("en"))
    for reason in sorted(HIDDEN_REASONS):
        verdict = state.verdict(
            ChallengeVerdict(
                correlation_id="s", session_id="s", index=0, count=2,
                challenge=ChallengeType.BLINK, passed=False, reason=reason,
            ),
            now=1.0,
        )  # fmt: skip
        assert verdict is not None and verdict["reason"] is None, reason
        assert verdict["text"] == "That did not work", reason
    finished = state.finish(SessionStatus.FAILED, ["FROZEN_STREAM", "TIMEOUT", "SPOOF_SUSPECTED"])
    assert finished is not None
    assert finished["reasons"] == ["TIMEOUT"] and finished["detail"] == "Time is up"
    assert state.screen.detail == "Time is up"


@pytest.mark.parametrize(
    ("language", "reasons", "detail"),
    [
        ("de", ["TIMEOUT", "FROZEN_STREAM"], "Die Zeit ist abgelaufen"),
        ("de", ["FROZEN_STREAM", "TOO_DARK"], "Es ist zu dunkel"),
        ("en", ["MEDIA_CLOCK_AHEAD"], None),  # which detector: never told (HIDDEN_REASONS)
        ("en", ["SOMETHING_NEW", "SPOOF_SUSPECTED"], None),
        ("en", ["SOMETHING_NEW"], None),
    ],
)
def test_a_failed_session_tells_the_user_its_first_reason_in_their_language(
    language: str, reasons: list[str], detail: str | None
) -> None:
    state = Instructions(load_catalog(language))
    finished = state.finish(SessionStatus.FAILED, reasons)
    assert finished is not None and finished["detail"] == detail
    assert state.screen.detail == detail  # the instruction video's closing screen says the same


def test_a_session_that_did_not_fail_shows_no_reason() -> None:
    for status in (SessionStatus.SUCCEEDED, SessionStatus.EXPIRED):
        finished = Instructions(load_catalog("en")).finish(status, ["EXPIRED"])
        assert finished is not None and finished["detail"] is None


def test_the_catalog_files_are_exactly_the_supported_languages() -> None:
    # contracts.languages answers the gateway and the ingress; a catalog without an entry there
    # (or an entry without a catalog) would make them promise what the call agent cannot draw.
    assert catalog_files() == SUPPORTED_LANGUAGES


def test_get_ready_names_what_is_wrong_until_the_first_challenge() -> None:
    from contracts.events import ReadinessChecked
    from services.call_agent.overlay import blank_frame, render

    state = Instructions(load_catalog("fr"))

    def checked(*problems: str) -> ReadinessChecked:
        return ReadinessChecked(correlation_id="s", session_id="s", problems=list(problems))

    message = state.guidance(checked("BACKLIT", "FACE_TOO_SMALL"), now=1.0)
    assert message == {
        "type": "guidance",
        "problems": ["BACKLIT", "FACE_TOO_SMALL"],
        "text": "Trop de lumière derrière vous : tournez-vous vers la lumière",
    }
    assert state.screen.text == "Préparez-vous" and state.screen.deadline is None
    assert state.screen.notice is not None and state.screen.notice.good is False
    drawn = render(blank_frame(), state.screen, now=500.0)  # the hint stays until it changes
    assert (drawn != render(blank_frame(), replace_notice(state), now=500.0)).any()
    ready = state.guidance(checked(), now=2.0)
    assert ready is not None and ready["text"] == "Regardez la caméra"
    assert state.screen.notice is not None and state.screen.notice.good is True
    state.challenge(issued(0), now=3.0)
    assert state.screen.notice is None  # the first challenge replaces the hint


def test_while_the_challenges_run_the_problem_that_refuses_the_frames_stays_beside_them() -> None:
    """Mid-challenge the light goes out: the worker counts none of those frames (its clock runs
    on) and says so; the hint stays beside the instruction, and the next one, until it is fixed."""
    from contracts.events import ReadinessChecked

    state = Instructions(load_catalog("en"))

    def checked(*problems: str) -> ReadinessChecked:
        return ReadinessChecked(correlation_id="s", session_id="s", problems=list(problems))

    state.challenge(issued(0), now=1.0)
    message = state.guidance(checked("TOO_DARK"), now=2.0)
    assert message == {
        "type": "guidance",
        "problems": ["TOO_DARK"],
        "text": "Too dark: turn on a light in front of you",
    }
    assert state.screen.challenge is not None and state.screen.deadline is not None  # still the challenge
    assert state.screen.notice is not None and state.screen.notice.text == message["text"]
    assert not state.screen.notice.good
    # the worker's events of one step: the hint, then the verdict and the next challenge
    state.verdict(
        turn_left_verdict(passed=True),
        now=3.0,
    )
    state.challenge(issued(1), now=3.1)
    assert state.screen.notice is not None and state.screen.notice.text == message["text"]
    fixed = state.guidance(checked(), now=4.0)
    assert fixed == {"type": "guidance", "problems": [], "text": ""}
    assert state.screen.notice is None and state.screen.challenge is not None


def replace_notice(state: Instructions) -> Any:
    from dataclasses import replace

    return replace(state.screen, notice=None)
