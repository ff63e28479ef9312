"""`faceproof bench guard` runs and prints the request guard's cost per MiB (smoke, not numbers)."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from faceproof.cli import app


def test_bench_guard_prints_ms_per_mib_for_honest_and_crafted_bodies() -> None:
    result = CliRunner().invoke(app, ["bench", "guard", "--size-mib", "0.25", "--rounds", "2", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    bodies = report["bodies"]
    assert set(bodies) == {
        "benign_compare",
        "crafted_unterminated",
        "crafted_quotes",
        "crafted_backslashes",
        "crafted_deep",
    }
    for name, body in bodies.items():
        assert body["bytes"] > 200_000, name
        assert body["scan_ms_per_mib"] > 0 and body["guard_ms_per_mib"] > 0, name
        assert body["scan_cpu_ms_per_mib"] >= 0 and body["scan_ms"]["n"] == 2, name
    # the honest body and the crafted ones that are valid JSON so far pass; the deep one is refused
    assert bodies["benign_compare"]["guard_status"] == 200
    assert bodies["crafted_deep"]["guard_status"] == 400 and bodies["crafted_deep"]["depth"] > 32
    assert report["worst_scan_ms_per_mib"] == max(body["scan_ms_per_mib"] for body in bodies.values())
    assert report["machine"]["cpus"] >= 1 and len(report["load_average_after"]) == 3
