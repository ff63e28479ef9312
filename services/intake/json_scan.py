"""One linear pass over a raw JSON body, before it is parsed: how deep it nests, how many values
it holds, and whether it holds a NUL character (raw, or the ``\\u0000`` escape, which no text column
or JSONB value stores).

No regular expression: the old string-stripping regex backtracked, quadratic in crafted input.
Here only the bytes that matter (``"`` ``\\`` ``[`` ``]`` ``{`` ``}`` ``,``) are picked out, in C
(``bytes.translate``, ``numpy.flatnonzero``), and the string/escape state is worked out on them
with numpy prefix sums, chunk by chunk, carrying three values between chunks. Every step is a
constant number of passes over the chunk, so the cost is O(n) in the body, whatever its content
(``faceproof bench guard`` measures it per MiB).

For valid JSON the depth is exact. For invalid JSON (a backslash outside a string, an
unterminated string) it may differ from any parser's idea, but then the parser refuses the body.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

__all__ = ["JsonScan", "has_nul", "json_depth", "scan_json"]

_QUOTE: Final = ord('"')
_BACKSLASH: Final = ord("\\")
_COMMA: Final = ord(",")
#: The nesting step of each byte: +1 opens an array or object, -1 closes one.
_STEPS: Final = np.zeros(256, dtype=np.int8)
_STEPS[[ord("["), ord("{")]] = 1
_STEPS[[ord("]"), ord("}")]] = -1
#: ``bytes.translate`` table: the seven structural bytes keep their value, every other byte becomes 0.
_MARKS: Final = bytes(c if c in b'"\\[]{},' else 0 for c in range(256))
_NUL_ESCAPE_TAIL: Final = np.frombuffer(b"u0000", dtype=np.uint8)
#: Bytes scanned per step: bounds the scan's working memory (~20 bytes per structural byte).
CHUNK_BYTES: Final = 1 << 20


@dataclass(frozen=True)
class JsonScan:
    #: Deepest nesting of arrays and objects (brackets inside strings do not count).
    depth: int
    #: A raw NUL byte, or a ``\u0000`` escape (its backslash not itself escaped).
    nul: bool
    #: Arrays and objects opened plus commas, outside strings: about the number of values the body
    #: parses into (``[{},{}]``: 4), whatever their size in bytes.
    values: int = 0


def scan_json(body: bytes, *, stop_above: int | None = None, chunk_bytes: int = CHUNK_BYTES) -> JsonScan:
    """Depth and NUL characters of ``body`` in one linear pass (see the module's doc). With
    ``stop_above``, the scan ends at the first chunk that nests deeper or holds a NUL (the depth is
    then the deepest seen so far)."""
    data = np.frombuffer(body, dtype=np.uint8)
    nul = b"\x00" in body
    look_for_escapes = b"\\u0000" in body  # else no escaped NUL can be there (memmem: fast)
    depth = deepest = values = 0
    in_string = 0  # 1 while inside a string at the chunk's start
    escape_next = False  # the previous chunk ended with a backslash that escapes this chunk's first byte
    for start in range(0, len(body), chunk_bytes):
        piece = body[start : start + chunk_bytes]
        found = np.frombuffer(piece.translate(_MARKS), dtype=np.uint8)
        positions = np.flatnonzero(found)
        escapes = escape_next or b"\\" in piece
        if escape_next:  # a virtual escaping backslash just before the chunk
            positions = np.concatenate((np.array([-1], dtype=np.intp), positions))
        if positions.size == 0:
            continue
        marks = found[positions]
        if escape_next:
            marks[0] = _BACKSLASH
        quote = marks == _QUOTE
        if escapes:
            escaper = _escapers(marks, positions)
            escaped = np.zeros(positions.size, dtype=bool)
            escaped[1:] = escaper[:-1] & (positions[1:] == positions[:-1] + 1)
            quote &= ~escaped
            escape_next = bool(escaper[-1]) and int(positions[-1]) == len(piece) - 1
        steps = _STEPS[marks]
        separates = marks == _COMMA
        if in_string or quote.any():
            quotes = np.cumsum(quote, dtype=np.int32)
            quotes += in_string
            structural = (quotes & 1) == 0  # outside strings
            if escapes:
                structural &= ~escaped
            steps *= structural
            separates &= structural
            in_string = int(quotes[-1] & 1)
        elif escapes:
            steps *= ~escaped
            separates &= ~escaped
        values += int(np.count_nonzero(separates)) + int(np.count_nonzero(steps > 0))
        running = np.cumsum(steps, dtype=np.int32)
        deepest = max(deepest, depth + int(running.max()))
        depth += int(running[-1])
        if escapes and look_for_escapes and not nul:
            nul = _nul_escape(data, start + positions[escaper & (positions >= 0)])
        if stop_above is not None and (nul or deepest > stop_above):
            break
    return JsonScan(depth=deepest, nul=nul, values=values)


def _escapers(marks: npt.NDArray[np.uint8], positions: npt.NDArray[np.intp]) -> npt.NDArray[np.bool_]:
    """Which backslashes start an escape: those at an even offset in their run of backslashes."""
    backslash = marks == _BACKSLASH
    index = np.arange(marks.size, dtype=np.intp)
    continues = np.zeros(marks.size, dtype=bool)  # the byte just before is a backslash of the same run
    continues[1:] = backslash[:-1] & (positions[1:] == positions[:-1] + 1)
    run_start = np.where(backslash & ~continues, index, 0)
    np.maximum.accumulate(run_start, out=run_start)
    result: npt.NDArray[np.bool_] = backslash & (((index - run_start) & 1) == 0)
    return result


def _nul_escape(data: npt.NDArray[np.uint8], escapers: npt.NDArray[np.intp]) -> bool:
    """Whether any escaping backslash (absolute offsets) is followed by ``u0000``."""
    escapers = escapers[escapers + _NUL_ESCAPE_TAIL.size < data.size]
    if escapers.size == 0:
        return False
    candidates = np.ones(escapers.size, dtype=bool)
    for offset, expected in enumerate(_NUL_ESCAPE_TAIL, start=1):
        candidates &= data[escapers + offset] == expected
    return bool(candidates.any())


def json_depth(body: bytes) -> int:
    """The deepest nesting of arrays and objects in ``body`` (strings skipped)."""
    return scan_json(body).depth


def has_nul(body: bytes) -> bool:
    """Whether a JSON body holds a NUL character (escaped, as JSON must, or raw)."""
    return scan_json(body).nul
