"""Startup checks of the deployment environment (FACEPROOF_ENVIRONMENT), run by every process.

Production refuses, each with a message that says what to change:

* the well-known development token (``faceproof-dev-token``), always; any other static token
  unless ``FACEPROOF_ALLOW_STATIC_TOKEN_IN_PRODUCTION=true`` (use ``faceproof keys create``);
* ``FACEPROOF_TLS_TERMINATION=none``: declare ``proxy`` (a reverse proxy or ingress terminates
  TLS) or ``native`` (the gateway serves TLS with ``FACEPROOF_TLS_CERT_FILE``/``_KEY_FILE``);
* a model pack whose licence is non-commercial, unless ``FACEPROOF_ACCEPT_NONCOMMERCIAL_MODELS=true``;
* a well-known default password (the compose file's old ``faceproof`` / ``faceproof-secret``,
  RabbitMQ's ``guest``, MinIO's ``minioadmin``) inside ``FACEPROOF_DATABASE_URL``,
  ``FACEPROOF_BROKER_URL`` or ``FACEPROOF_STORAGE_URL``.

In every environment ``native`` needs readable certificate and key files, and a gateway bound to
an address other than loopback (``check_environment(settings, bind=host)``) refuses the development
token and the default passwords: they are only for ``faceproof up`` on 127.0.0.1. Development and
staging log what production would refuse, and start.
"""

from __future__ import annotations

import ipaddress
import logging
from urllib.parse import unquote, urlsplit

from faces.catalog import load_catalog
from faces.errors import FaceError
from faces.packs import get_pack
from infra.settings import DEVELOPMENT_TOKEN, Environment, Settings, TlsTermination

__all__ = [
    "DEFAULT_PASSWORDS",
    "EnvironmentRefused",
    "bind_problems",
    "check_environment",
    "is_loopback",
    "problems",
]

log = logging.getLogger("faceproof.environment")

#: How long a static token must be at least to be allowed in production.
MIN_STATIC_TOKEN_LENGTH = 32

#: Passwords anyone can look up: the compose file's former defaults, RabbitMQ's and MinIO's own.
DEFAULT_PASSWORDS = frozenset({"faceproof", "faceproof-secret", "guest", "minioadmin"})

#: The settings whose URLs carry a password, by environment variable.
_URL_SETTINGS = (
    ("FACEPROOF_DATABASE_URL", "database_url"),
    ("FACEPROOF_BROKER_URL", "broker_url"),
    ("FACEPROOF_STORAGE_URL", "storage_url"),
)


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
    found += _default_password_problems(settings)
    found += _model_problems(settings)
    return found


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1); false for 0.0.0.0, ::
    and every other address or name."""
    if host.strip().lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False


def _default_password_problems(settings: Settings) -> list[str]:
    found = []
    for variable, field in _URL_SETTINGS:
        url = str(getattr(settings, field))
        try:
            password = urlsplit(url).password
        except ValueError:
            continue
        if password is not None and unquote(password) in DEFAULT_PASSWORDS:
            found.append(
                f"{variable} uses a well-known default password; set the service's password "
                "(compose: POSTGRES_PASSWORD, RABBITMQ_PASSWORD, S3_SECRET_KEY) and put it in the URL"
            )
    return found


def bind_problems(settings: Settings, host: str) -> list[str]:
    """What a gateway listening on ``host`` must not hold: the development token and default
    passwords work only on loopback (``faceproof up`` on 127.0.0.1)."""
    if is_loopback(host):
        return []
    found = []
    if settings.static_token == DEVELOPMENT_TOKEN:
        found.append(
            f"FACEPROOF_API_TOKEN is the public development token and the gateway binds {host!r} "
            "(FACEPROOF_HOST), not loopback; set FACEPROOF_API_TOKEN to a secret of your own or empty "
            "(API keys: `faceproof keys create NAME`), or bind FACEPROOF_HOST=127.0.0.1"
        )
    found += [
        f"{reason} (the gateway binds {host!r}, FACEPROOF_HOST, not loopback)"
        for reason in _default_password_problems(settings)
    ]
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


def _forwarded_token_problems(settings: Settings) -> list[str]:
    """Behind a reverse proxy (or with TLS of its own) a gateway on loopback serves other machines."""
    if settings.static_token != DEVELOPMENT_TOKEN or settings.tls_termination is TlsTermination.NONE:
        return []
    return [
        f"FACEPROOF_API_TOKEN is the public development token and FACEPROOF_TLS_TERMINATION is "
        f"{settings.tls_termination.value!r}: other machines reach the gateway even on loopback; set "
        "FACEPROOF_API_TOKEN to a secret of your own or empty (API keys: `faceproof keys create NAME`)"
    ]


def check_environment(settings: Settings, *, bind: str | None = None) -> None:
    """Raise :class:`EnvironmentRefused` when the settings are unfit for their environment, or (a
    gateway listening on ``bind``) when it would accept a public secret on a non-loopback address."""
    refused = _tls_problems(settings)
    if settings.environment is Environment.PRODUCTION:
        refused += problems(settings)
    else:
        for reason in problems(settings):
            log.info("%s would refuse to start: %s", Environment.PRODUCTION.value, reason)
        if bind is not None:  # (production refuses these on any address already)
            refused += bind_problems(settings, bind) + _forwarded_token_problems(settings)
    if refused:
        raise EnvironmentRefused(refused)
