"""Every exchange, routing key and queue name on the broker, in one place.

Commands go to the ``faceproof.commands`` topic exchange, events to ``faceproof.events``.
Each consuming queue dead-letters to ``faceproof.dead-letters`` with its own name as the
routing key, into ``<queue>.dlq``.
"""

from __future__ import annotations

from dataclasses import dataclass

COMMANDS_EXCHANGE = "faceproof.commands"
EVENTS_EXCHANGE = "faceproof.events"
DEAD_LETTER_EXCHANGE = "faceproof.dead-letters"


class CommandKey:
    COMPARE_FACES = "compare.faces"
    START_SESSION = "session.start"
    JOIN_CALL = "call.join"
    MATCH_REFERENCES = "references.match"
    DELIVER_CALLBACK = "callback.deliver"
    FETCH_REFERENCES = "references.fetch"
    EXPIRE_SESSION = "session.expire"


class EventKey:
    FACES_COMPARED = "faces.compared"
    SESSION_STARTED = "session.started"
    FRAME_CAPTURED = "frame.captured"
    READINESS_CHECKED = "readiness.checked"
    CHALLENGE_ISSUED = "challenge.issued"
    CHALLENGE_VERDICT = "challenge.verdict"
    LIVENESS_DECIDED = "liveness.decided"
    REFERENCES_MATCHED = "references.matched"
    SESSION_FINISHED = "session.finished"
    CALLBACK_DELIVERED = "callback.delivered"
    CALL_JOINED = "call.joined"
    CALL_FAILED = "call.failed"


#: Frames of a session's n-th WebRTC connection are numbered from n * CONNECTION_SEQUENCE_STRIDE
#: (StartSession.sequence_base), so a reconnect never reuses a sequence number.
CONNECTION_SEQUENCE_STRIDE = 100_000


@dataclass(frozen=True)
class Route:
    """A consuming queue and what it is bound to."""

    queue: str
    exchange: str
    routing_key: str

    @property
    def dead_letter_queue(self) -> str:
        return f"{self.queue}.dlq"


MATCHER_COMPARE = Route("matcher.compare-faces", COMMANDS_EXCHANGE, CommandKey.COMPARE_FACES)
MATCHER_REFERENCES = Route("matcher.match-references", COMMANDS_EXCHANGE, CommandKey.MATCH_REFERENCES)
CALL_AGENT_SESSIONS = Route("call-agent.start-session", COMMANDS_EXCHANGE, CommandKey.START_SESSION)
CALL_AGENT_CALLS = Route("call-agent.join-call", COMMANDS_EXCHANGE, CommandKey.JOIN_CALL)
NOTIFIER_CALLBACKS = Route("notifier.deliver-callback", COMMANDS_EXCHANGE, CommandKey.DELIVER_CALLBACK)
NOTIFIER_FETCHES = Route("notifier.fetch-references", COMMANDS_EXCHANGE, CommandKey.FETCH_REFERENCES)

# Liveness worker: events from the call agent and the matcher, and expiry commands.
LIVENESS_SESSIONS = Route("liveness.session-started", EVENTS_EXCHANGE, EventKey.SESSION_STARTED)
LIVENESS_FRAMES = Route("liveness.frames", EVENTS_EXCHANGE, EventKey.FRAME_CAPTURED)
LIVENESS_MATCHES = Route("liveness.references-matched", EVENTS_EXCHANGE, EventKey.REFERENCES_MATCHED)
LIVENESS_EXPIRY = Route("liveness.expire-session", COMMANDS_EXCHANGE, CommandKey.EXPIRE_SESSION)

# Notifier: runs a video-call flow's ending (references, match, one callback) and delivers it.
NOTIFIER_SESSIONS = Route("notifier.session-finished", EVENTS_EXCHANGE, EventKey.SESSION_FINISHED)
NOTIFIER_MATCHES = Route("notifier.references-matched", EVENTS_EXCHANGE, EventKey.REFERENCES_MATCHED)
NOTIFIER_CALLS = Route("notifier.call-failed", EVENTS_EXCHANGE, EventKey.CALL_FAILED)

#: Events a call agent follows for the sessions it streams (each agent binds its own
#: exclusive, auto-deleted queue to these keys on the events exchange).
CALL_AGENT_SESSION_EVENTS: tuple[str, ...] = (
    EventKey.CHALLENGE_ISSUED,
    EventKey.READINESS_CHECKED,
    EventKey.CHALLENGE_VERDICT,
    EventKey.LIVENESS_DECIDED,
    EventKey.SESSION_FINISHED,
)

ALL_ROUTES: tuple[Route, ...] = (
    MATCHER_COMPARE,
    MATCHER_REFERENCES,
    CALL_AGENT_SESSIONS,
    CALL_AGENT_CALLS,
    NOTIFIER_CALLBACKS,
    NOTIFIER_FETCHES,
    LIVENESS_SESSIONS,
    LIVENESS_FRAMES,
    LIVENESS_MATCHES,
    LIVENESS_EXPIRY,
    NOTIFIER_SESSIONS,
    NOTIFIER_MATCHES,
    NOTIFIER_CALLS,
)

# --------------------------------------------------------------------------- public API (docs/public-api.md)
#
# Upstream systems talk to the broker directly through two exchanges of their own, never the
# internal ones above. Commands are published to PUBLIC_COMMANDS_EXCHANGE; the ingress validates
# them exactly as the HTTP gateway validates requests and forwards them inside. Events for a
# client are published to PUBLIC_EVENTS_EXCHANGE with the routing key ``<client id>.<event key>``;
# RabbitMQ's topic permissions let each upstream user bind only keys of its own client.
# A v2 would live beside v1 as ``faceproof.public.v2.*``.

PUBLIC_API_VERSION = 1
PUBLIC_COMMANDS_EXCHANGE = "faceproof.public.v1.commands"
PUBLIC_EVENTS_EXCHANGE = "faceproof.public.v1.events"


class PublicCommandKey:
    """Routing keys of the public commands (the body is the matching HTTP request body)."""

    COMPARE_FACES = "compare.faces"
    START_SESSION = "session.start"
    JOIN_CALL = "call.join"


class PublicEventKey:
    """Routing keys (after the ``<client id>.`` prefix) of the public events."""

    FACES_COMPARED = EventKey.FACES_COMPARED
    SESSION_CREATED = "session.created"
    CALL_STARTED = "call.started"
    LIVENESS_DECIDED = EventKey.LIVENESS_DECIDED
    SESSION_FINISHED = EventKey.SESSION_FINISHED
    CALL_FAILED = EventKey.CALL_FAILED
    CALLBACK_DELIVERED = EventKey.CALLBACK_DELIVERED
    COMMAND_REJECTED = "command.rejected"


def public_event_key(client_id: str, event_key: str) -> str:
    """The routing key of an event for ``client_id`` on the public events exchange."""
    return f"{client_id}.{event_key}"


#: The ingress: every public command (one queue, the routing key says which command).
INGRESS_COMMANDS = Route("ingress.public-commands", PUBLIC_COMMANDS_EXCHANGE, "#")
#: The ingress relays these internal events to their client on the public events exchange.
INGRESS_FACES_COMPARED = Route("ingress.faces-compared", EVENTS_EXCHANGE, EventKey.FACES_COMPARED)
INGRESS_LIVENESS_DECIDED = Route("ingress.liveness-decided", EVENTS_EXCHANGE, EventKey.LIVENESS_DECIDED)
INGRESS_SESSION_FINISHED = Route("ingress.session-finished", EVENTS_EXCHANGE, EventKey.SESSION_FINISHED)
INGRESS_CALL_FAILED = Route("ingress.call-failed", EVENTS_EXCHANGE, EventKey.CALL_FAILED)
INGRESS_CALLBACK_DELIVERED = Route("ingress.callback-delivered", EVENTS_EXCHANGE, EventKey.CALLBACK_DELIVERED)

INGRESS_ROUTES: tuple[Route, ...] = (
    INGRESS_COMMANDS,
    INGRESS_FACES_COMPARED,
    INGRESS_LIVENESS_DECIDED,
    INGRESS_SESSION_FINISHED,
    INGRESS_CALL_FAILED,
    INGRESS_CALLBACK_DELIVERED,
)
