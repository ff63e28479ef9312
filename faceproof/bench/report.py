"""Printing results: JSON for machines, aligned ``key: value`` lines for people."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

__all__ = ["render"]


def _flatten(prefix: str, value: Any, lines: list[tuple[str, str]]) -> None:
    if isinstance(value, Mapping) and value and not all(isinstance(v, int | float) for v in value.values()):
        for key, item in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), item, lines)
        return
    if isinstance(value, Mapping):
        text = "  ".join(f"{key}={item}" for key, item in value.items())
    elif isinstance(value, list | tuple):
        text = ", ".join(str(item) for item in value)
    else:
        text = str(value)
    lines.append((prefix, text))


def render(result: Mapping[str, Any], *, as_json: bool) -> str:
    """The result as indented JSON, or one ``key: value`` line per leaf (numeric maps on one line)."""
    if as_json:
        return json.dumps(result, indent=2)
    lines: list[tuple[str, str]] = []
    _flatten("", result, lines)
    width = max((len(key) for key, _ in lines), default=0)
    return "\n".join(f"{key.ljust(width)}  {text}" for key, text in lines)
