"""The port of the intake use cases that is theirs alone: JoinCall's way to a call agent
(RabbitMQ: :class:`services.intake.calls.BrokerCallCommands`). The session and flow rows, the
reference store, the fetcher and the lockout's memory are ``domain.ports``'s; ``tests/unit/intake``
has an in-memory fake of each.
"""

from __future__ import annotations

from typing import Protocol

from contracts.commands import JoinCall

__all__ = ["CallCommands"]


class CallCommands(Protocol):
    async def join(self, command: JoinCall) -> None:
        """Hand JoinCall to a call agent; raises ``services.intake.errors.Unavailable`` when the
        broker cannot be reached."""
        ...
