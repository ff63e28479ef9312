"""The API documents generated from the code: AsyncAPI (broker messages) and OpenAPI (HTTP).

``faceproof docs generate`` writes ``docs/asyncapi.json`` and ``docs/openapi.json``;
tests/unit/test_api_documents.py regenerates both in memory and fails when the files differ, so the
documents cannot drift from the code. The AsyncAPI document holds every service's subscribers (built
without connecting: their handlers are wired to nothing) and, for what services publish with
``broker.publish``, the publishers listed in :data:`PUBLISHED`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, cast

from faststream.rabbit import RabbitBroker
from faststream.specification import AsyncAPI
from pydantic import BaseModel

from contracts import commands, events
from contracts.routing import CommandKey, EventKey
from infra.broker import COMMANDS, EVENTS, create_broker
from infra.settings import Settings

__all__ = ["ASYNCAPI_PATH", "OPENAPI_PATH", "PUBLISHED", "asyncapi_document", "openapi_document", "render"]

REPO_ROOT: Final = Path(__file__).resolve().parents[1]
ASYNCAPI_PATH: Final = REPO_ROOT / "docs" / "asyncapi.json"
OPENAPI_PATH: Final = REPO_ROOT / "docs" / "openapi.json"
VERSION: Final = "0.1.0"


@dataclass(frozen=True)
class Published:
    """A message a service publishes with ``broker.publish`` (subscribers document themselves)."""

    service: str
    exchange: str
    routing_key: str
    message: type[BaseModel]
    description: str


PUBLISHED: Final[tuple[Published, ...]] = (
    Published("gateway", "commands", CommandKey.COMPARE_FACES, commands.CompareFaces, "POST /compare (RPC)."),
    Published(
        "gateway", "commands", CommandKey.START_SESSION, commands.StartSession, "A browser's offer (RPC)."
    ),
    Published("gateway", "commands", CommandKey.JOIN_CALL, commands.JoinCall, "POST /v1/calls, /join-call."),
    Published("gateway", "events", EventKey.SESSION_FINISHED, events.SessionFinished, "Lazy expiry on read."),
    Published(
        "matcher", "events", EventKey.FACES_COMPARED, events.FacesCompared, "A compare not sent as RPC."
    ),
    Published(
        "matcher", "events", EventKey.REFERENCES_MATCHED, events.ReferencesMatched, "References scored."
    ),
    Published(
        "call-agent", "events", EventKey.SESSION_STARTED, events.SessionStarted, "A connection answered."
    ),
    Published("call-agent", "events", EventKey.FRAME_CAPTURED, events.FrameCaptured, "A sampled frame."),
    Published("call-agent", "events", EventKey.CALL_JOINED, events.CallJoined, "Joined a room."),
    Published("call-agent", "events", EventKey.CALL_FAILED, events.CallFailed, "A room call failed."),
    Published(
        "liveness", "events", EventKey.READINESS_CHECKED, events.ReadinessChecked, "Get ready: what is wrong."
    ),
    Published("liveness", "events", EventKey.CHALLENGE_ISSUED, events.ChallengeIssued, "The next challenge."),
    Published(
        "liveness", "events", EventKey.CHALLENGE_VERDICT, events.ChallengeVerdict, "A challenge's verdict."
    ),
    Published("liveness", "events", EventKey.LIVENESS_DECIDED, events.LivenessDecided, "Live or not."),
    Published(
        "liveness", "events", EventKey.SESSION_FINISHED, events.SessionFinished, "The terminal status."
    ),
    Published(
        "liveness", "commands", CommandKey.MATCH_REFERENCES, commands.MatchReferences, "Session vs reference."
    ),
    Published(
        "notifier", "commands", CommandKey.FETCH_REFERENCES, commands.FetchReferences, "A flow's references."
    ),
    Published(
        "notifier", "commands", CommandKey.MATCH_REFERENCES, commands.MatchReferences, "Call vs references."
    ),
    Published(
        "notifier", "commands", CommandKey.DELIVER_CALLBACK, commands.DeliverCallback, "A callback attempt."
    ),
    Published(
        "notifier", "events", EventKey.CALLBACK_DELIVERED, events.CallbackDelivered, "A flow's callback."
    ),
)


def _docs_settings() -> Settings:
    """The built-in defaults, whatever the environment says (the brokers are built, never started)."""
    return Settings.model_construct(database_url="sqlite+aiosqlite://", metrics_port=0)


def _matcher(settings: Settings) -> RabbitBroker:
    from services.matcher.main import build_app

    return cast(RabbitBroker, build_app(settings, engine=cast(Any, None), images=cast(Any, None)).broker)


def _call_agent(settings: Settings) -> RabbitBroker:
    from services.call_agent.main import build_app

    return build_app(settings, leases=cast(Any, None), store=cast(Any, None)).broker


def _liveness(settings: Settings) -> RabbitBroker:
    from services.liveness.main import LivenessWorker
    from services.liveness.session_models import SessionModels

    models = SessionModels(cast(Any, None), cast(Any, None), 0.0)
    return LivenessWorker(settings, models=models, store=cast(Any, None)).broker


def _notifier(settings: Settings) -> RabbitBroker:
    from services.notifier.main import build_notifier

    none = cast(Any, None)
    return build_notifier(
        settings, flows=none, sessions=none, references=none, sender=none, outbox=none
    ).broker


def _ingress(settings: Settings) -> RabbitBroker:
    from types import SimpleNamespace

    from services.ingress.main import build_app

    broker = create_broker(settings)
    deps = cast(Any, SimpleNamespace(outbox=None))
    build_app(settings, deps=deps, owners=cast(Any, None), broker=broker)
    return broker


#: Each service's broker with its subscribers (add a service here when it consumes messages).
SUBSCRIBERS: Final[tuple[Callable[[Settings], RabbitBroker], ...]] = (
    _matcher,
    _call_agent,
    _liveness,
    _notifier,
    _ingress,
)


def _publishers(settings: Settings) -> RabbitBroker:
    broker = create_broker(settings)
    exchanges = {"commands": COMMANDS, "events": EVENTS}
    for item in PUBLISHED:
        broker.publisher(
            item.routing_key,
            exchanges[item.exchange],
            title=f"{item.service}:{exchanges[item.exchange].name}:{item.routing_key}:{item.message.__name__}",
            description=f"{item.service} publishes {item.message.__name__}. {item.description}",
            schema=item.message,
        )
    return broker


#: A per-process queue's random suffix (``call-agent.session-events.<hex>``), made stable.
_PER_PROCESS = re.compile(r"(session-events)\.[0-9a-f]{12}")


def asyncapi_document() -> dict[str, Any]:
    settings = _docs_settings()
    brokers = [build(settings) for build in SUBSCRIBERS] + [_publishers(settings)]
    spec = AsyncAPI(
        *brokers,
        title="faceproof messages",
        version=VERSION,
        description="Commands and events on RabbitMQ between faceproof's services (contracts/).",
        schema_version="3.0.0",
    )
    text = _PER_PROCESS.sub(r"\1.PROCESS", spec.to_specification().to_json())
    return cast(dict[str, Any], json.loads(text))


def openapi_document() -> dict[str, Any]:
    from services.gateway.app import create_app

    return create_app(_docs_settings()).openapi()


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def generate() -> list[Path]:
    """Write both documents; returns their paths."""
    ASYNCAPI_PATH.write_text(render(asyncapi_document()))
    OPENAPI_PATH.write_text(render(openapi_document()))
    return [ASYNCAPI_PATH, OPENAPI_PATH]
