"""What each route may receive before it runs: the body limit sized to what the route takes, and
whether the caller must hold a valid API key before the body is read (docs/security.md, "Input
limits"). :class:`services.gateway.limits.RequestGuard` applies them.

A route not listed here gets the small limit (``FACEPROOF_MAX_SMALL_BODY_BYTES``), so a new route
is safe by default; tests/unit/test_request_guard.py checks the table against the app's routes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from typing import Final

from infra.settings import Settings

__all__ = ["Auth", "BodyRule", "BodyRules", "image_field_bytes"]


class Auth(Enum):
    #: No credentials (probes, the hosted page) or checked by the route itself after a small body.
    NONE = "none"
    #: An API key (or the static token): checked before a single byte of the body is read.
    API_KEY = "api-key"
    #: A session's client token (the browser's routes): a bearer must be there before the body is
    #: read; the route checks it against the session (the body is small: an SDP offer).
    CLIENT_TOKEN = "client-token"


@dataclass(frozen=True)
class BodyRule:
    limit: int
    auth: Auth


#: The routes that take a body: (method, path template, images in the body, auth). Images: how many
#: image fields the body may carry (-1: the probe and up to FACEPROOF_MAX_REFERENCES references).
#: The rest (GET, DELETE: no body) get the small limit and authenticate in the route as before.
_ROUTES: Final = (
    ("POST", "/v1/compare", 2, Auth.API_KEY),
    ("POST", "/compare", 2, Auth.API_KEY),
    ("POST", "/v1/verify", -1, Auth.API_KEY),
    ("POST", "/v1/sessions", 1, Auth.API_KEY),
    ("POST", "/session", 1, Auth.API_KEY),
    ("POST", "/v1/calls", 0, Auth.API_KEY),
    ("POST", "/join-call", 0, Auth.API_KEY),
    ("POST", "/v1/sessions/{session_id}/offer", 0, Auth.CLIENT_TOKEN),
)
_OFFER: Final = "/v1/sessions/{session_id}/offer"


def image_field_bytes(settings: Settings) -> int:
    """The most one image field can take in a JSON body: base64 of ``max_image_bytes``, with room
    for a data-URL prefix and line breaks (JSON-escaped ``\\r\\n`` every 76 characters)."""
    base64_chars = 4 * -(-settings.max_image_bytes // 3)
    return base64_chars + base64_chars // 16 + 1024


def _pattern(template: str) -> re.Pattern[str]:
    """A template's path as a regex: ``{name}`` is one segment (no backtracking: ``[^/]+``)."""
    parts = re.split(r"(\{[^}/]+\})", template)
    return re.compile("".join("[^/]+" if part.startswith("{") else re.escape(part) for part in parts) + r"\Z")


class BodyRules:
    """The rule of each listed route, from the settings; :meth:`rule` finds a request's."""

    def __init__(self, settings: Settings) -> None:
        small = settings.max_small_body_bytes
        image = image_field_bytes(settings)
        self.default = BodyRule(limit=small, auth=Auth.NONE)
        self._rules: list[tuple[str, str, re.Pattern[str], BodyRule]] = []
        for method, template, images, auth in _ROUTES:
            count = 1 + settings.max_references if images < 0 else images
            limit = small + count * image
            if template == _OFFER:  # the SDP, JSON-escaped (CRLF line ends: twice its bytes)
                limit = small + 2 * settings.max_sdp_bytes
            rule = BodyRule(limit=min(limit, settings.max_body_bytes), auth=auth)
            self._rules.append((method, template, _pattern(template), rule))

    def rule(self, method: str, path: str) -> BodyRule:
        for rule_method, _, pattern, rule in self._rules:
            if rule_method == method and pattern.match(path):
                return rule
        return self.default

    def listed(self) -> dict[tuple[str, str], BodyRule]:
        """Every listed route, (method, path template) -> rule (for the docs and tests)."""
        return {(method, template): rule for method, template, _, rule in self._rules}
