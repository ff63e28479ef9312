"""The request guard's body scan (services/intake/json_scan.py): JSON depth and NUL characters in
one linear pass, checked against a plain byte-by-byte state machine on every split into chunks."""

from __future__ import annotations

import json
import random
import time

import pytest

from services.intake.json_scan import scan_json


def _reference(body: bytes) -> tuple[int, bool, int]:
    """What a JSON tokenizer sees, one byte at a time (slow; the definition the scan must match)."""
    depth = deepest = values = 0
    in_string = escaped = False
    nul = b"\x00" in body
    for index, byte in enumerate(body):
        if escaped:
            escaped = False
            nul = nul or body[index : index + 5] == b"u0000"
        elif byte == ord("\\"):
            escaped = True
        elif byte == ord('"'):
            in_string = not in_string
        elif not in_string and byte in b"[{":
            depth += 1
            values += 1
            deepest = max(deepest, depth)
        elif not in_string and byte == ord(","):
            values += 1
        elif not in_string and byte in b"]}":
            depth -= 1
    return deepest, nul, values


def test_depth_skips_brackets_inside_strings() -> None:
    assert scan_json(b'{"a": [1, {"b": "[[[[[[{{{{"}]}').depth == 3
    assert scan_json(b'"\\"[[[["').depth == 0  # the escaped quote does not end the string
    assert scan_json(b'["\\\\", [[]]]').depth == 3  # an escaped backslash does end it
    assert scan_json(b"[" * 40 + b"]" * 40).depth == 40
    assert scan_json(b"").depth == 0 and scan_json(b'"just a string"').depth == 0


def test_nul_escape_counts_the_backslashes_before_it() -> None:
    assert scan_json(rb'{"a": "x\u0000"}').nul
    assert scan_json(rb'{"a": "\\\u0000"}').nul  # an escaped backslash, then the NUL escape
    assert scan_json(b'{"a": "x\x00"}').nul  # a raw NUL byte
    assert not scan_json(rb'{"a": "\\u0000"}').nul  # an escaped backslash, then the text "u0000"
    assert not scan_json(rb'{"a": "\u0001 u0000"}').nul
    assert not scan_json(rb'{"a": "\\\\u0000"}').nul


def test_a_body_split_anywhere_scans_the_same() -> None:
    """Escapes, strings and nesting carried across chunk edges, on random bodies of JSON's bytes."""
    rng = random.Random(13)
    pieces = [b'"', b"\\", b"[", b"]", b"{", b"}", b"u", b"0", b"a", b"\\u0000", b"\x00", b" ", b"\\\\", b","]
    for _ in range(500):
        body = b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 30)))
        expected = _reference(body)
        for chunk_bytes in (1, 2, 3, 7, 1 << 20):
            scan = scan_json(body, chunk_bytes=chunk_bytes)
            assert (scan.depth, scan.nul, scan.values) == expected, (body, chunk_bytes)


def test_real_json_is_scanned_exactly() -> None:
    document = {"source": "data:image/jpeg;base64,/9j/" + "A" * 1000, "x": [[{"k": ']]}}\\"['}]], "n": None}
    body = json.dumps(document).encode()
    assert (scan_json(body).depth, scan_json(body).nul) == (4, False)
    assert scan_json(body, chunk_bytes=5).depth == 4


def test_stop_above_ends_the_scan_early() -> None:
    body = b"[" * 100 + b"]" * 100 + b'"' + b"A" * (4 << 20)
    assert scan_json(body, stop_above=8, chunk_bytes=64).depth > 8


@pytest.mark.parametrize(
    "crafted",
    [
        b'"' + b'\\"' * (1 << 19),  # the old regex's worst case: one string that never ends
        b'"' * (1 << 20),
        b"\\" * (1 << 20),
        b"[" * (1 << 20),
        b'"\\u0000' * (1 << 17),
    ],
)
def test_cost_grows_linearly_with_crafted_input(crafted: bytes) -> None:
    """Four times the bytes cost about four times the time (the old regex: sixteen times); the
    ratio, not an absolute time, so a loaded machine does not fail it."""

    def cost(body: bytes) -> float:
        best = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            scan_json(body)
            best = min(best, time.perf_counter() - started)
        return best

    small, large = crafted[: len(crafted) // 4], crafted
    assert cost(large) < 8 * cost(small) + 0.05


def test_values_are_counted_outside_strings_whatever_their_size() -> None:
    assert scan_json(b"[{},{}]").values == 4
    assert scan_json(b'{"a": "x,y,[{", "b": [1, 2, 3]}').values == 5
    assert scan_json(json.dumps({"source": "A" * 100_000, "target": "B" * 100_000}).encode()).values == 2
    crafted = b"[" + b"{}," * 1_000_000 + b"{}]"  # 3 MiB that json.loads makes a million dicts of
    assert scan_json(crafted).values == 2_000_002
    assert scan_json(crafted, chunk_bytes=4097).values == 2_000_002
