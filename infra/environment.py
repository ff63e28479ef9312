"""Startup checks of the deployment environment (FACEPROOF_ENVIRONMENT), run by every process.

Production refuses, each with a message that says what to change:

* the well-known development token (``faceproof-dev-token``), always; any other static token
  unless ``FACEPROOF_ALLOW_STATIC_TOKEN_IN_PRODUCTION=true`` (use ``faceproof keys create``);
* ``FACEPROOF_TLS_TERMINATION=none``: declare ``proxy`` (a reverse proxy or ingress terminates
  TLS) or ``native`` (the gateway serves TLS with ``FACEPROOF_TLS_CERT_FILE``/``_KEY_FILE``);
* a model pack whose licence is non-commercial, unless ``FACEPROOF_ACCEPT_NONCOMMERCIAL_MODELS=true``.

In every environment ``native`` needs readable certificate and key files. Development and staging
log what production would refuse, and start.
"""

from __future__ import annotations

import logging

from faces.catalog import load_catalog
from faces.errors import FaceError
from faces.packs import get_pack
from infra.settings import DEVELOPMENT_TOKEN, Environment, Settings, TlsTermination

__all__ = ["EnvironmentRefused", "check_environment", "problems"]

log = logging.getLogger("faceproof.environment")

#: How long a static token must be at least to be allowed in production.
MIN_STATIC_TOKEN_LENGTH = 32


class EnvironmentRefused(Exception):
    """The settings are not fit for the environment; the message lists every reason."""

    def __init__(self, reasons: list[str]) -> None:
        super().__init__("; ".join(reasons))
        self.reasons = reasons


def problems(settings: Settings) -> list[str]:
    """Everything production would refuse about ``settings`` (whatever the environment)."""
    found: list[str] = []
    token = settings.static_token
    if token == DEVELOPMENT_TOKEN:
        found.append(
            "FACEPROOF_API_TOKEN is the public development token; set FACEPROOF_API_TOKEN= (empty) "
            "and create API keys with `faceproof keys create NAME`"
        )
    elif token is not None and not settings.allow_static_token_in_production:
        found.append(
            "a static FACEPROOF_API_TOKEN is set; use API keys (`faceproof keys create NAME`), or set "
            "FACEPROOF_ALLOW_STATIC_TOKEN_IN_PRODUCTION=true to keep a strong static token"
        )
    elif token is not None and len(token) < MIN_STATIC_TOKEN_LENGTH:
        found.append(f"the static FACEPROOF_API_TOKEN is shorter than {MIN_STATIC_TOKEN_LENGTH} characters")
    if settings.tls_termination is TlsTermination.NONE:
        found.append(
            "FACEPROOF_TLS_TERMINATION is 'none'; declare 'proxy' (a reverse proxy or ingress terminates "
            "TLS) or 'native' (with FACEPROOF_TLS_CERT_FILE and FACEPROOF_TLS_KEY_FILE)"
        )
    found += _model_problems(settings)
    return found


def _tls_problems(settings: Settings) -> list[str]:
    if settings.tls_termination is not TlsTermination.NATIVE:
        return []
    found = []
    for name, path in (
        ("FACEPROOF_TLS_CERT_FILE", settings.tls_cert_file),
        ("FACEPROOF_TLS_KEY_FILE", settings.tls_key_file),
    ):
        if path is None:
            found.append(f"FACEPROOF_TLS_TERMINATION=native needs {name}")
        elif not path.is_file():
            found.append(f"{name} {str(path)!r} is not a readable file")
    return found


def _model_problems(settings: Settings) -> list[str]:
    if settings.accept_noncommercial_models:
        return []
    try:
        pack = get_pack(settings.model_pack, settings.resolved_models_dir)
        catalog = load_catalog(settings.resolved_models_dir)
    except FaceError as error:
        return [f"the model pack cannot be checked: {error}"]
    files = (pack.detector, *pack.embedders)
    restricted = [file for file in files if file in catalog and not catalog.entries[file].commercial_use]
    if pack.commercial_use and not restricted:
        return []
    detail = f" ({', '.join(restricted)})" if restricted else ""
    return [
        f"model pack {pack.name!r} is not licensed for commercial use{detail}: {pack.licence_summary} "
        "Choose a commercial pack (FACEPROOF_MODEL_PACK=permissive) or set "
        "FACEPROOF_ACCEPT_NONCOMMERCIAL_MODELS=true to acknowledge the licence"
    ]


def check_environment(settings: Settings) -> None:
    """Raise :class:`EnvironmentRefused` when the settings are unfit for their environment."""
    refused = _tls_problems(settings)
    if settings.environment is Environment.PRODUCTION:
        refused += problems(settings)
    else:
        for reason in problems(settings):
            log.info("%s would refuse to start: %s", Environment.PRODUCTION.value, reason)
    if refused:
        raise EnvironmentRefused(refused)
