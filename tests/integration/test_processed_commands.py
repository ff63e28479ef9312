"""Which broker commands run again when their message id comes back (``infra.db.ingress.retaken``),
on both databases: a redelivery finishes one left RUNNING; a new publication may retry one
REJECTED; nothing runs a command whose rejection the client already got, nor one that is DONE."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from infra.db.engine import session_factory
from infra.db.ingress import CommandStatus, ProcessedCommands

pytestmark = pytest.mark.integration


@pytest.fixture
async def processed(engine: AsyncEngine) -> AsyncIterator[ProcessedCommands]:
    factory: async_sessionmaker[AsyncSession] = session_factory(engine)
    yield ProcessedCommands(factory)


@pytest.mark.parametrize(
    ("status", "redelivered", "runs_again"),
    [
        (CommandStatus.RUNNING, True, True),  # its worker died: the broker's redelivery finishes it
        (CommandStatus.RUNNING, False, False),  # another copy while it runs
        (CommandStatus.REJECTED, False, True),  # sent again, say after a rate limit
        (CommandStatus.REJECTED, True, False),  # the attack: nacked after its rejection was published
        (CommandStatus.DONE, True, False),
        (CommandStatus.DONE, False, False),
    ],
)
async def test_a_command_runs_again_only_where_the_rule_says(
    processed: ProcessedCommands, status: CommandStatus, redelivered: bool, runs_again: bool
) -> None:
    message_id = f"m-{uuid.uuid4().hex}"
    assert await processed.claim("client-1", message_id, "session.start", redelivered=False)
    await processed.finish("client-1", message_id, status)
    assert (
        await processed.claim("client-1", message_id, "session.start", redelivered=redelivered) is runs_again
    )
    assert await processed.claim(
        "client-2", message_id, "session.start", redelivered=False
    )  # ids are per client
