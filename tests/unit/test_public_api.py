"""The public broker API's pure parts: the envelope checks, body parsing, the permissions file."""

from __future__ import annotations

import inspect
import json
import re

import pytest

from contracts.http import CompareRequest
from contracts.routing import INGRESS_COMMANDS
from faceproof.broker_cli import INGRESS_POLICY, UpstreamLimits, setup, setup_commands, upstream_permissions
from infra.settings import Settings
from services.ingress.envelope import Rejected, parse_body, read_envelope
from tests.paths import REPO_ROOT


def _envelope(**changes: object) -> object:
    fields: dict[str, object] = {
        "routing_key": "compare.faces",
        "message_id": "m1",
        "correlation_id": None,
        "reply_to": None,
        "user_id": "acme",
        "headers": {},
        "body_size": 10,
        "max_body_bytes": 100,
    }
    return read_envelope(**{**fields, **changes})  # type: ignore[arg-type]


def test_a_good_envelope_defaults_the_correlation_id_to_the_message_id() -> None:
    envelope = _envelope(headers={"x-schema-version": b"1"})
    assert envelope.correlation_id == "m1"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"message_id": None}, "MISSING_MESSAGE_ID"),
        ({"message_id": "x" * 129}, "MISSING_MESSAGE_ID"),
        ({"headers": {"x-schema-version": "2"}}, "UNSUPPORTED_SCHEMA_VERSION"),
        ({"routing_key": "session.expire"}, "UNKNOWN_COMMAND"),
        ({"body_size": 101}, "BODY_TOO_LARGE"),
    ],
)
def test_bad_envelopes_are_rejected(changes: dict[str, object], reason: str) -> None:
    with pytest.raises(Rejected) as rejected:
        _envelope(**changes)
    assert rejected.value.reason == reason


def test_bodies_are_the_http_request_models_and_errors_never_echo_the_input() -> None:
    assert isinstance(parse_body("compare.faces", b'{"source": "a", "target": "b"}'), CompareRequest)
    with pytest.raises(Rejected) as rejected:
        parse_body("compare.faces", b'{"source": "SECRET-IMAGE", "threshold": 7}')
    assert rejected.value.reason == "INVALID_REQUEST"
    assert "SECRET-IMAGE" not in rejected.value.detail and "target" in rejected.value.detail
    with pytest.raises(Rejected) as malformed:
        parse_body("session.start", b"{")
    assert malformed.value.reason == "MALFORMED_JSON"


def test_permissions_allow_the_public_exchanges_and_own_queues_only() -> None:
    perms = upstream_permissions("acme", "c-1")
    assert re.match(perms.write, "faceproof.public.v1.commands")
    assert re.match(perms.write, "upstream.acme.replies")
    for name in ("faceproof.commands", "faceproof.events", "faceproof.public.v1.events", "upstream.other.q"):
        assert not re.match(perms.write, name)
    assert re.match(perms.read, "faceproof.public.v1.events") and not re.match(
        perms.read, "matcher.compare-faces"
    )
    assert re.match(perms.events_read, "c-1.session.finished") and not re.match(perms.events_read, "#")


def test_the_definitions_file_grants_what_broker_setup_grants() -> None:
    definitions = json.loads((REPO_ROOT / "deploy" / "rabbitmq" / "definitions.json").read_text())
    perms = upstream_permissions("acme", "CLIENT_ID")
    [granted] = definitions["permissions"]
    assert (granted["configure"], granted["write"], granted["read"]) == (
        perms.configure,
        perms.write,
        perms.read,
    )
    assert definitions["topic_permissions"][0]["read"] == perms.events_read
    # in the vhost faceproof runs in by default: `broker setup`'s and compose's (a broker URL ending in /)
    default_vhost = inspect.signature(setup).parameters["vhost"].default
    kinds = ("permissions", "topic_permissions", "exchanges")
    entries = [entry for kind in kinds for entry in definitions[kind]]
    assert {entry["vhost"] for entry in entries} == {default_vhost} == {"/"}
    assert definitions["vhosts"] == [{"name": default_vhost}]


def test_broker_setup_bounds_how_long_a_public_command_waits_for_the_ingress() -> None:
    """An upstream publisher sets its messages' expiration as it likes: without a policy a compare's
    photos waited in ingress.public-commands for as long as the ingress was down."""
    commands = setup_commands("/", "acme", "c-1", UpstreamLimits(command_ttl_s=21_600))
    [policy] = [args for args in commands if INGRESS_POLICY in args]
    pattern, definition = policy[-2], json.loads(policy[-1])
    assert re.fullmatch(pattern, INGRESS_COMMANDS.queue) and not re.fullmatch(
        pattern, "ingress.public-commands.dlq"
    )
    assert definition == {"message-ttl": 21_600 * 1000}
    settings = Settings(retention_s=86_400)
    assert settings.public_command_ttl_s == 21_600  # half the message time to live
