"""Compare two photos over RabbitMQ (request/reply), start a session, and read the events.

    FACEPROOF_BROKER_URL=amqp://USER:PASSWORD@HOST:5672/VHOST FACEPROOF_BROKER_USER=USER \
    FACEPROOF_CLIENT_ID=<API client id> python examples/broker_compare.py a.jpg b.jpg

USER is a RabbitMQ user made by `faceproof broker setup --user USER --client NAME`.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from contracts.public import SessionCreated
from faceproof.client import BrokerClient, CommandRefused


async def main(source: Path, target: Path) -> None:
    url, user = os.environ["FACEPROOF_BROKER_URL"], os.environ["FACEPROOF_BROKER_USER"]
    async with await BrokerClient.connect(url, user) as client:
        result = await client.compare(source, target, timeout_s=120)
        print(f"similarity={result.similarity:.3f} match={result.match}")

        try:
            await client.compare(b"not an image", target)
        except CommandRefused as refused:
            print(f"refused={refused.reason}")

        # Without reply_to, answers go to the client's public events.
        events = await client.events(os.environ["FACEPROOF_CLIENT_ID"], "session.created")
        await client.publish("session.start", {"settings": {"challenges": 2}})
        async with asyncio.timeout(60):
            created = await anext(events)
        assert isinstance(created, SessionCreated)
        print(f"session={created.session_id} status={created.status.value}")


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), Path(sys.argv[2])))
