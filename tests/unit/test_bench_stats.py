from __future__ import annotations

import pytest

from faceproof.bench.compare import compare_body, overhead_ratio
from faceproof.bench.report import render
from faceproof.bench.stats import evenly, ms_summary, percentile_ms, rate


def test_percentiles_are_in_milliseconds_with_linear_interpolation() -> None:
    samples = [0.001 * value for value in range(1, 101)]  # 1..100 ms
    assert percentile_ms(samples, 50) == pytest.approx(50.5)
    assert percentile_ms(samples, 95) == pytest.approx(95.05)
    assert percentile_ms(samples, 0) == pytest.approx(1.0)
    assert percentile_ms(samples, 100) == pytest.approx(100.0)


def test_percentile_of_one_sample_is_that_sample() -> None:
    assert percentile_ms([0.0125], 99) == 12.5


@pytest.mark.parametrize(("samples", "q"), [([], 50), ([0.1], -1), ([0.1], 101)])
def test_percentile_rejects_nonsense(samples: list[float], q: float) -> None:
    with pytest.raises(ValueError):
        percentile_ms(samples, q)


def test_summary_keys_and_order() -> None:
    summary = ms_summary([0.010, 0.020, 0.030, 0.040])
    assert summary["n"] == 4
    assert summary["mean"] == pytest.approx(25.0)
    assert summary["p50"] <= summary["p95"] <= summary["p99"]
    with pytest.raises(ValueError):
        ms_summary([])


def test_rate() -> None:
    assert rate(10, 4.0) == 2.5
    assert rate(10, 0.0) == 0.0


def test_evenly_spreads_over_the_whole_sequence() -> None:
    items = list(range(100))
    assert evenly(items, 4) == [0, 25, 50, 75]
    assert evenly(items, 200) == items
    assert evenly([1, 2, 3], 3) == [1, 2, 3]
    with pytest.raises(ValueError):
        evenly(items, 0)


def test_overhead_ratio() -> None:
    assert overhead_ratio(115.0, 100.0) == 1.15
    with pytest.raises(ValueError):
        overhead_ratio(1.0, 0.0)


def test_compare_body_is_the_api_shape() -> None:
    assert compare_body(b"ab", b"c") == b'{"source": "YWI=", "target": "Yw=="}'


def test_render_text_puts_numeric_maps_on_one_line() -> None:
    text = render(
        {"pack": "p", "detect_ms": {"p50": 1.5, "p95": 2.0}, "machine": {"cpus": 2, "cpu": "x"}},
        as_json=False,
    )
    lines = text.splitlines()
    assert lines[0].split() == ["pack", "p"]
    assert lines[1].split() == ["detect_ms", "p50=1.5", "p95=2.0"]
    assert lines[2].split() == ["machine.cpus", "2"]
    assert render({"a": 1}, as_json=True) == '{\n  "a": 1\n}'
