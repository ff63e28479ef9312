"""Host names spelled differently from their ASCII form."""

from __future__ import annotations


def fullwidth(name: str) -> str:
    """``name`` in fullwidth letters and digits (U+FF01..): another spelling of the same host to DNS."""
    return "".join(chr(ord(c) + 0xFEE0) if c.isalnum() else c for c in name)
