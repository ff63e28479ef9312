"""In-memory fakes of the ingress ports (services/ingress/handlers.py): who a broker user is, which
commands ran, the rate limit, where answers go, who owns a session or a flow, the dead letters."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from contracts.commands import CompareFaces
from contracts.envelope import Event
from domain.limits import Limits, RateDecision
from infra.db.ingress import BrokerClient, CommandStatus, retaken
from infra.dead_letters import RedactedLetter
from infra.settings import Settings
from services.ingress.handlers import CommandDeps
from services.intake.calls import CallStarter
from services.intake.sessions import SessionCreator
from tests.unit.intake.fakes import FakeCallCommands, FakeFailures, FakeFlows, FakeSessions, FakeStore

CLIENT = BrokerClient(client_id="client-1", rate_per_second=10, burst=10, monthly_quota=1000)


@dataclass
class FakeIdentities:
    """Broker user name -> the API client it acts for (``upstream`` is client-1)."""

    clients: dict[str, BrokerClient] = field(default_factory=lambda: {"upstream": CLIENT})

    async def client_for(self, user_name: str) -> BrokerClient | None:
        return self.clients.get(user_name)


@dataclass
class FakeProcessed:
    """ProcessedCommands' rule (``infra.db.ingress.retaken``): a new id is taken; a REJECTED one
    may be sent again, not redelivered; a RUNNING one is taken again only when redelivered."""

    rows: dict[tuple[str, str], CommandStatus] = field(default_factory=dict)

    async def claim(self, client_id: str, message_id: str, command: str, *, redelivered: bool) -> bool:
        status = self.rows.get((client_id, message_id))
        if status is not None and status not in retaken(redelivered=redelivered):
            return False
        self.rows[(client_id, message_id)] = CommandStatus.RUNNING
        return True

    async def finish(self, client_id: str, message_id: str, status: CommandStatus) -> None:
        self.rows[(client_id, message_id)] = status


@dataclass
class FakeLimiter:
    """Allows ``allowance`` requests, then refuses with ``code``."""

    allowance: int = 1_000
    code: str = "RATE_LIMITED"
    taken: list[tuple[str, Limits]] = field(default_factory=list)

    async def take(self, client_key: str, limits: Limits, now: datetime) -> RateDecision:
        self.taken.append((client_key, limits))
        allowed = len(self.taken) <= self.allowance
        return RateDecision(
            allowed=allowed,
            code=None if allowed else self.code,
            limit=limits.burst,
            remaining=max(self.allowance - len(self.taken), 0),
            reset_s=1,
            retry_after_s=0 if allowed else 7,
        )


@dataclass(frozen=True)
class Sent:
    """One publication: ``where`` is ``inside`` (a command), ``reply`` or ``public``."""

    where: str
    message: Any
    target: str | None
    correlation_id: str


@dataclass
class FakeOutbox:
    sent: list[Sent] = field(default_factory=list)

    async def compare(self, command: CompareFaces, *, reply_to: str | None, correlation_id: str) -> None:
        self.sent.append(Sent("inside", command, reply_to, correlation_id))

    async def reply(self, event: Event, *, reply_to: str, correlation_id: str) -> None:
        self.sent.append(Sent("reply", event, reply_to, correlation_id))

    async def public(self, event: Event, *, client_id: str, key: str) -> None:
        self.sent.append(Sent("public", event, f"{client_id}.{key}", event.correlation_id))


@dataclass
class FakeOwners:
    sessions: dict[str, str] = field(default_factory=dict)
    flows: dict[str, str] = field(default_factory=dict)

    async def of_session(self, session_id: str) -> str | None:
        return self.sessions.get(session_id)

    async def of_flow(self, flow_id: str) -> str | None:
        return self.flows.get(flow_id)


@dataclass
class FakeDeadLetters:
    letters: list[RedactedLetter] = field(default_factory=list)

    async def __call__(self, letter: RedactedLetter) -> None:
        self.letters.append(letter)


@dataclass
class Ingress:
    """The ingress's dependencies, every one in memory, and what they recorded."""

    settings: Settings = field(default_factory=Settings)
    identities: FakeIdentities = field(default_factory=FakeIdentities)
    processed: FakeProcessed = field(default_factory=FakeProcessed)
    limiter: FakeLimiter | None = None
    sessions: FakeSessions = field(default_factory=FakeSessions)
    store: FakeStore = field(default_factory=FakeStore)
    failures: FakeFailures = field(default_factory=FakeFailures)
    flows: FakeFlows = field(default_factory=FakeFlows)
    commands: FakeCallCommands = field(default_factory=FakeCallCommands)
    outbox: FakeOutbox = field(default_factory=FakeOutbox)
    dead_letters: FakeDeadLetters = field(default_factory=FakeDeadLetters)

    @property
    def deps(self) -> CommandDeps:
        return CommandDeps(
            settings=self.settings,
            identities=self.identities,
            processed=self.processed,
            limiter=self.limiter,
            sessions=SessionCreator(self.settings, self.sessions, self.store, self.failures),
            calls=CallStarter(self.settings, self.sessions, self.flows, self.commands),
            outbox=self.outbox,
        )
