"""Localized texts of the instruction video and the data channel (``catalogs/{lang}.json``).

Each catalog maps the same keys as ``en.json``: ``challenge.<ChallengeType>``, ``status.*``,
``verdict.*``, ``finished.<SessionStatus>``, ``guidance.<Precheck>`` (the "get ready" hints) and
``reason.<code>``. A language without a catalog
falls back to English (``contracts.languages``, the rule the gateway and the ingress answer with),
and so does a key a catalog lacks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources

from contracts.languages import DEFAULT_LANGUAGE, SUPPORTED_LANGUAGES, normalise_language
from contracts.values import ChallengeType, Precheck, SessionStatus

__all__ = [
    "DEFAULT_LANGUAGE",
    "Catalog",
    "available_languages",
    "catalog_files",
    "load_catalog",
    "normalise_language",
    "required_keys",
]

_PACKAGE = "services.call_agent"


def required_keys() -> frozenset[str]:
    """Keys every catalog must have (a catalog may add ``reason.*`` texts beyond these)."""
    return frozenset(
        [f"challenge.{c.value}" for c in ChallengeType]
        + [f"finished.{s.value}" for s in SessionStatus if s.terminal]
        + [f"guidance.{p.value}" for p in Precheck]
        + ["status.waiting", "status.checking", "status.get_ready", "verdict.passed", "verdict.failed"]
    )


@dataclass(frozen=True)
class Catalog:
    language: str
    texts: dict[str, str]
    fallback: dict[str, str]

    def text(self, key: str) -> str:
        """The text for ``key``, in English when this catalog lacks it, else the key itself."""
        return self.texts.get(key) or self.fallback.get(key) or key

    def optional(self, key: str) -> str | None:
        """The text for ``key`` or ``None`` (for reason codes that may have no text)."""
        return self.texts.get(key) or self.fallback.get(key)

    def challenge(self, challenge: ChallengeType) -> str:
        return self.text(f"challenge.{challenge.value}")

    def finished(self, status: SessionStatus) -> str:
        return self.text(f"finished.{status.value}")

    def reason(self, code: str | None) -> str | None:
        return None if code is None else self.optional(f"reason.{code}")


def available_languages() -> tuple[str, ...]:
    """The languages with a catalog (``contracts.languages.SUPPORTED_LANGUAGES``)."""
    return SUPPORTED_LANGUAGES


def catalog_files() -> tuple[str, ...]:
    """The languages of the ``catalogs/*.json`` files (a test checks they are the supported ones)."""
    folder = resources.files(_PACKAGE).joinpath("catalogs")
    return tuple(
        sorted(entry.name.removesuffix(".json") for entry in folder.iterdir() if entry.name.endswith(".json"))
    )


@cache
def _texts(language: str) -> dict[str, str]:
    raw = resources.files(_PACKAGE).joinpath("catalogs", f"{language}.json").read_text(encoding="utf-8")
    data = json.loads(raw)
    return {str(key): str(value) for key, value in data["texts"].items()}


def load_catalog(language: str) -> Catalog:
    chosen = normalise_language(language)
    return Catalog(chosen, _texts(chosen), _texts(DEFAULT_LANGUAGE))
