"""The languages of the instructions (the call agent's catalogs) and the fallback rule.

One rule for every door: the gateway and the broker ingress answer a call's language with it, the
call agent picks its catalog with it. ``services/call_agent/catalogs`` holds exactly one
``{language}.json`` per entry of :data:`SUPPORTED_LANGUAGES` (a unit test checks both ways).
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_LANGUAGE",
    "SUPPORTED_LANGUAGES",
    "choose_language",
    "normalise_language",
    "primary_subtag",
]

DEFAULT_LANGUAGE = "en"
#: Languages with an instruction catalog.
SUPPORTED_LANGUAGES: tuple[str, ...] = ("de", "en", "es", "fr", "it", "nl", "pl", "pt")


def primary_subtag(tag: str) -> str:
    """``"es-MX"``, ``"PT_br"`` -> ``"es"``, ``"pt"``: the language part of a tag, lower case."""
    return tag.strip().replace("_", "-").split("-", 1)[0].lower()


def normalise_language(tag: str) -> str:
    """The supported language for ``tag``: ``"es-ES"`` -> ``"es"``; unknown or malformed -> ``"en"``."""
    primary = primary_subtag(tag)
    return primary if primary in SUPPORTED_LANGUAGES else DEFAULT_LANGUAGE


def choose_language(requested: str) -> tuple[str, bool]:
    """The language for ``requested`` and whether it fell back to :data:`DEFAULT_LANGUAGE`."""
    chosen = normalise_language(requested)
    return chosen, chosen != primary_subtag(requested)
