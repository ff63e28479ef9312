"""The instruction overlay: mirrored picture, localized text, arrows, target, countdown, final screen."""

from __future__ import annotations

import numpy as np
import pytest

from contracts.values import ChallengeType
from services.call_agent.catalog import load_catalog
from services.call_agent.instructions import Screen
from services.call_agent.overlay import ACCENT, GOOD, render

H, W = 480, 640


def grey() -> np.ndarray:
    return np.full((H, W, 3), 120, dtype=np.uint8)


def accent_mask(image: np.ndarray) -> np.ndarray:
    return np.all(np.abs(image.astype(int) - np.array(ACCENT)) < 30, axis=2)


def test_the_picture_is_mirrored_and_the_input_untouched() -> None:
    frame = np.zeros((H, W, 3), dtype=np.uint8)
    frame[:, : W // 2] = (200, 0, 0)  # red on the camera's left
    frame[:, W // 2 :] = (0, 0, 200)
    before = frame.copy()
    out = render(frame, Screen(text=""), now=0.0)
    assert out.shape == frame.shape and out.dtype == np.uint8
    assert np.array_equal(frame, before)
    middle = H // 2
    assert out[middle, 50, 2] == 200 and out[middle, 50, 0] == 0  # blue now on the left
    assert out[middle, W - 50, 0] == 200


def test_the_instruction_text_is_drawn_in_the_banner() -> None:
    blank = render(grey(), Screen(text=""), now=0.0)
    text = render(grey(), Screen(text="Turn your head to the left"), now=0.0)
    banner = slice(0, 60)
    changed = np.any(blank[banner] != text[banner], axis=2)
    assert changed.sum() > 500
    assert np.array_equal(blank[150:350], text[150:350])  # only the banner changed


@pytest.mark.parametrize("language", ["es", "pl", "de", "fr"])
def test_accented_texts_render_with_their_accents(language: str) -> None:
    catalog = load_catalog(language)
    for challenge in ChallengeType:
        render(grey(), Screen(text=catalog.challenge(challenge), challenge=challenge), now=0.0)
    # A glyph with a diacritic is drawn as such, not as its base letter or a placeholder box.
    pairs = {"es": ("Acércate", "Acercate"), "pl": ("Obróć głowę", "Obroc glowe"), "de": ("Öffnen", "Offnen")}
    if language in pairs:
        accented, plain = pairs[language]
        a = render(grey(), Screen(text=accented), now=0.0)
        b = render(grey(), Screen(text=plain), now=0.0)
        assert np.any(a[:60] != b[:60])


@pytest.mark.parametrize(
    ("challenge", "side"),
    [
        (ChallengeType.TURN_LEFT, "left"),
        (ChallengeType.TURN_RIGHT, "right"),
        (ChallengeType.LOOK_UP, "top"),
        (ChallengeType.LOOK_DOWN, "bottom"),
    ],
)
def test_arrows_point_the_way_to_move_in_the_mirrored_view(challenge: ChallengeType, side: str) -> None:
    out = render(grey(), Screen(text="", challenge=challenge), now=0.0)
    mask = accent_mask(out)
    mask[:70] = False  # banner
    mask[H - 60 :] = False  # footer (countdown)
    ys, xs = np.nonzero(mask)
    assert len(xs) > 100
    tip_x = xs.min() if side == "left" else xs.max()
    tip_y = ys.min() if side == "top" else ys.max()
    if side == "left":
        assert xs.mean() < W * 0.35 and tip_x < W * 0.2
    elif side == "right":
        assert xs.mean() > W * 0.65 and tip_x > W * 0.8
    elif side == "top":
        assert ys.mean() < H * 0.4 and abs(xs.mean() - W / 2) < 20
    else:
        assert ys.mean() > H * 0.6 and tip_y > H * 0.7 and abs(xs.mean() - W / 2) < 20


def test_the_target_marker_is_drawn_at_the_target() -> None:
    screen = Screen(text="", challenge=ChallengeType.NOSE_TO_TARGET, target=(0.25, 0.6))
    mask = accent_mask(render(grey(), screen, now=0.0))
    mask[H - 60 :] = False
    ys, xs = np.nonzero(mask)
    assert abs(xs.mean() - 0.25 * W) < 8 and abs(ys.mean() - 0.6 * H) < 8


def test_countdown_and_progress_are_drawn_in_the_footer() -> None:
    plain = render(grey(), Screen(text="x"), now=0.0)
    timed = Screen(text="x", index=1, count=3, deadline=7.2)
    assert timed.seconds_left(0.0) == 8 and timed.progress() == "2/3"
    counted = render(grey(), timed, now=0.0)
    later = render(grey(), timed, now=5.0)  # 3 s left: the digits change
    footer = slice(H - 50, H)
    assert np.any(plain[footer] != counted[footer])
    assert np.any(counted[footer, W // 2 :] != later[footer, W // 2 :])
    assert np.array_equal(counted[footer, : W // 3], later[footer, : W // 3])  # progress unchanged


def test_the_final_screen_dims_the_picture_and_shows_the_status() -> None:
    out = render(grey(), Screen(text="Verified. Thank you!", final=True, succeeded=True), now=0.0)
    assert out[5, 5].max() < 60  # dimmed
    good = np.all(np.abs(out.astype(int) - np.array(GOOD)) < 30, axis=2)
    assert good.sum() > 200
