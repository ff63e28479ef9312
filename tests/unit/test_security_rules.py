"""Pure security rules: JSON depth, rate-limit headers, and what
production refuses at startup (each case, with a message that says what to change). The bucket,
quota and lockout rules: tests/unit/domain/test_domain_limits.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from domain.limits import RateDecision
from infra.environment import EnvironmentRefused, check_environment, is_loopback
from infra.settings import DEVELOPMENT_TOKEN, Settings
from services.gateway.limits import json_depth
from services.gateway.ratelimit import decision_headers


def test_json_depth_skips_strings() -> None:
    assert json_depth(b'{"a": [1, {"b": "[[[[[[{{{{"}]}') == 3
    assert json_depth(b'"\\"[[[["') == 0
    assert json_depth(b"[" * 40 + b"]" * 40) == 40


def test_headers_on_success_and_refusal() -> None:
    ok = decision_headers(RateDecision(True, None, 100, 99, 1, 0, quota=1000, quota_remaining=10))
    assert ok["RateLimit-Limit"] == ok["X-RateLimit-Limit"] == "100"
    assert ok["RateLimit-Remaining"] == "99" and ok["X-Quota-Remaining"] == "10"
    assert "Retry-After" not in ok
    refused = decision_headers(RateDecision(False, "RATE_LIMITED", 100, 0, 50, 1))
    assert refused["Retry-After"] == "1" and refused["RateLimit-Remaining"] == "0"


def _production(tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "environment": "production",
        "data_dir": tmp_path,
        "api_token": "",
        "tls_termination": "proxy",
        "model_pack": "permissive",
        "broker_url": "amqp://faceproof:an-operator-secret@rabbitmq:5672/",
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def _refusal(settings: Settings) -> str:
    with pytest.raises(EnvironmentRefused) as refused:
        check_environment(settings)
    return str(refused.value)


def test_production_with_keys_and_a_proxy_starts(tmp_path: Path) -> None:
    check_environment(_production(tmp_path))


def test_production_refuses_the_development_token(tmp_path: Path) -> None:
    message = _refusal(
        _production(tmp_path, api_token=DEVELOPMENT_TOKEN, allow_static_token_in_production=True)
    )
    assert "public development token" in message and "faceproof keys create" in message


def test_production_refuses_a_static_token_unless_allowed(tmp_path: Path) -> None:
    strong = "s" * 48
    assert "FACEPROOF_ALLOW_STATIC_TOKEN_IN_PRODUCTION" in _refusal(_production(tmp_path, api_token=strong))
    check_environment(_production(tmp_path, api_token=strong, allow_static_token_in_production=True))
    weak = _production(tmp_path, api_token="short", allow_static_token_in_production=True)
    assert "shorter than" in _refusal(weak)


def test_production_refuses_no_tls(tmp_path: Path) -> None:
    assert "FACEPROOF_TLS_TERMINATION is 'none'" in _refusal(_production(tmp_path, tls_termination="none"))


def test_native_tls_needs_the_files_in_any_environment(tmp_path: Path) -> None:
    message = _refusal(Settings(data_dir=tmp_path, tls_termination="native"))  # development
    assert "FACEPROOF_TLS_CERT_FILE" in message and "FACEPROOF_TLS_KEY_FILE" in message
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("cert")
    key.write_text("key")
    check_environment(_production(tmp_path, tls_termination="native", tls_cert_file=cert, tls_key_file=key))


def test_production_refuses_a_noncommercial_pack_unless_acknowledged(tmp_path: Path) -> None:
    message = _refusal(_production(tmp_path, model_pack="mobilefacenet"))
    assert "not licensed for commercial use" in message and "FACEPROOF_ACCEPT_NONCOMMERCIAL_MODELS" in message
    check_environment(_production(tmp_path, model_pack="mobilefacenet", accept_noncommercial_models=True))


def test_development_starts_with_what_production_refuses(tmp_path: Path) -> None:
    check_environment(Settings(data_dir=tmp_path, api_token=DEVELOPMENT_TOKEN, model_pack="mobilefacenet"))


def test_every_reason_is_listed_at_once(tmp_path: Path) -> None:
    settings = _production(
        tmp_path, api_token=DEVELOPMENT_TOKEN, tls_termination="none", model_pack="mobilefacenet"
    )
    with pytest.raises(EnvironmentRefused) as refused:
        check_environment(settings)
    assert len(refused.value.reasons) == 3


# ---------------------------------------------------------------- public secrets beyond loopback

#: The compose file's former defaults, as an operator who kept them would have them.
COMPOSE_DEFAULTS = {
    "database_url": "postgresql+asyncpg://faceproof:faceproof@postgres:5432/faceproof",
    "broker_url": "amqp://faceproof:faceproof@rabbitmq:5672/",
    "storage_url": "s3://faceproof:faceproof-secret@minio:9000/faceproof?secure=false",
}
OWN_SECRETS = {
    "database_url": "postgresql+asyncpg://faceproof:pg-8f3a1c@postgres:5432/faceproof",
    "broker_url": "amqp://faceproof:mq-5d2e9b@rabbitmq:5672/",
    "storage_url": "s3://faceproof:s3-77c0aa41@minio:9000/faceproof?secure=false",
}


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.53", "localhost", "::1", "[::1]"])
def test_loopback_addresses(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "gateway.example.com", ""])
def test_other_addresses_are_not_loopback(host: str) -> None:
    assert not is_loopback(host)


def test_the_development_token_only_on_loopback(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, api_token=DEVELOPMENT_TOKEN)  # development, as `faceproof up`
    for host in ("127.0.0.1", "localhost", "::1"):
        check_environment(settings, bind=host)
    message = _refusal_on(settings, "0.0.0.0")
    assert "FACEPROOF_API_TOKEN is the public development token" in message
    assert "FACEPROOF_HOST" in message and "'0.0.0.0'" in message


@pytest.mark.parametrize("termination", ["proxy", "native"])
def test_the_development_token_behind_a_proxy_or_with_tls_is_refused_on_loopback_too(
    tmp_path: Path, termination: str
) -> None:
    """A reverse proxy on the same machine forwards other machines' requests to 127.0.0.1."""
    tls = {"tls_cert_file": tmp_path / "c.pem", "tls_key_file": tmp_path / "k.pem"}
    for file in tls.values():
        file.write_text("x")
    settings = Settings(
        data_dir=tmp_path,
        api_token=DEVELOPMENT_TOKEN,
        tls_termination=termination,
        **(tls if termination == "native" else {}),  # type: ignore[arg-type]
    )
    with pytest.raises(EnvironmentRefused) as refused:
        check_environment(settings, bind="127.0.0.1")
    assert any(f"FACEPROOF_TLS_TERMINATION is '{termination}'" in r for r in refused.value.reasons)


@pytest.mark.parametrize("setting", sorted(COMPOSE_DEFAULTS))
def test_a_default_password_only_on_loopback(tmp_path: Path, setting: str) -> None:
    values: dict[str, object] = {"data_dir": tmp_path, "api_token": "", **OWN_SECRETS}
    values[setting] = COMPOSE_DEFAULTS[setting]
    settings = Settings(**values)  # type: ignore[arg-type]
    check_environment(settings, bind="127.0.0.1")
    message = _refusal_on(settings, "0.0.0.0")
    assert f"FACEPROOF_{setting.upper()} uses a well-known default password" in message
    assert "FACEPROOF_HOST" in message


def test_own_secrets_start_on_any_address(tmp_path: Path) -> None:
    check_environment(
        Settings(data_dir=tmp_path, api_token="an-operator-token-of-40-characters-xxxxxx", **OWN_SECRETS),
        bind="0.0.0.0",
    )


def test_workers_are_not_checked_for_a_bind(tmp_path: Path) -> None:
    """Only a gateway serves the token; a worker (bind=None) with the defaults starts in development."""
    check_environment(Settings(data_dir=tmp_path, api_token=DEVELOPMENT_TOKEN, host="0.0.0.0"))


def test_production_refuses_default_passwords_on_any_address(tmp_path: Path) -> None:
    settings = _production(tmp_path, **COMPOSE_DEFAULTS)
    with pytest.raises(EnvironmentRefused) as refused:
        check_environment(settings, bind="127.0.0.1")
    assert len(refused.value.reasons) == 3
    assert all("well-known default password" in reason for reason in refused.value.reasons)
    guest = _production(tmp_path, broker_url="amqp://guest:guest@127.0.0.1:5672/")
    assert "FACEPROOF_BROKER_URL uses a well-known default password" in _refusal(guest)


def _refusal_on(settings: Settings, host: str) -> str:
    with pytest.raises(EnvironmentRefused) as refused:
        check_environment(settings, bind=host)
    return str(refused.value)


def test_a_message_and_its_dead_letter_share_the_retention_period() -> None:
    """RabbitMQ starts a dead letter's clock again, so a message's time in queues and its dead
    letter's time must add up to the retention period at most."""
    default = Settings(retention_s=86_400)
    assert (default.resolved_dead_letter_ttl_s, default.message_ttl_s) == (43_200, 43_200)
    chosen = Settings(retention_s=86_400, dead_letter_ttl_s=3_600)
    assert chosen.message_ttl_s == 82_800
    for whole_period in (86_400, 90_000):  # nothing left for the message itself, or more than all
        with pytest.raises(ValueError, match="must be less than FACEPROOF_RETENTION_S"):
            Settings(retention_s=86_400, dead_letter_ttl_s=whole_period)


def test_the_sdp_limit_cannot_pass_what_a_start_session_carries() -> None:
    """Above 65,536 an offer the gateway accepted could not be put in its StartSession: a 500."""
    assert Settings().max_sdp_bytes == 65_536
    with pytest.raises(ValueError, match="max_sdp_bytes"):
        Settings(max_sdp_bytes=65_537)
