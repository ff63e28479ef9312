"""Operations commands: ``faceproof dlq ...`` (dead letters) and ``faceproof audit list``.

JSON lines on stdout; never message bodies, images, embeddings or tokens.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer

from infra.settings import load_settings

__all__ = ["audit_app", "dlq_app"]

dlq_app = typer.Typer(
    help="Dead-letter queues: list, show (no bodies), replay, upgrade (limits).", no_args_is_help=True
)
audit_app = typer.Typer(help="The audit log (decisions, erasures).", no_args_is_help=True)


@dlq_app.command("list")
def dlq_list() -> None:
    """Every dead-letter queue that exists, with its message count."""
    from infra.dead_letters import list_queues

    for depth in asyncio.run(list_queues(load_settings().broker_url)):
        typer.echo(json.dumps({"queue": depth.queue, "messages": depth.messages}))


@dlq_app.command("show")
def dlq_show(queue: str, limit: Annotated[int, typer.Option(min=1, max=1000)] = 20) -> None:
    """Message and correlation ids, routing keys, why it died, payload size (never the body)."""
    from infra.dead_letters import show

    try:
        letters = asyncio.run(show(load_settings().broker_url, queue, limit=limit))
    except ValueError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(2) from None
    for letter in letters:
        typer.echo(json.dumps(letter.to_dict()))


@dlq_app.command("replay")
def dlq_replay(
    queue: str,
    limit: Annotated[int, typer.Option(min=1, max=100_000)] = 100,
    message_id: Annotated[str | None, typer.Option("--message-id")] = None,
) -> None:
    """Republish dead letters to the queue they died in; each is acknowledged from the
    dead-letter queue only after the broker confirmed the copy. A letter whose data is older than
    the message time to live (FACEPROOF_RETENTION_S less FACEPROOF_DEAD_LETTER_TTL_S) is left: it
    may hold face images, and expires with the dead-letter queue's own time to live."""
    from infra.dead_letters import replay

    try:
        settings = load_settings()
        letters = asyncio.run(
            replay(
                settings.broker_url,
                queue,
                limit=limit,
                message_id=message_id,
                message_ttl_s=settings.message_ttl_s,
            )
        )
    except ValueError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(2) from None
    for letter in letters:
        typer.echo(json.dumps({"replayed": letter.message_id, "to": letter.source_queue}))
    typer.echo(f"{len(letters)} replayed", err=True)


@dlq_app.command("upgrade")
def dlq_upgrade(
    discard: Annotated[
        bool, typer.Option("--discard", help="Also replace queues that hold letters (deleted with them).")
    ] = False,
) -> None:
    """Give every dead-letter queue its limits (TTL within retention, length, size): a queue
    declared before them is declared again if empty (or with --discard); one holding letters is
    otherwise kept and reported (exit 1)."""
    from infra.broker import DeadLetterLimits, DeadLetterQueueState
    from infra.dead_letters import upgrade

    settings = load_settings()
    queues = asyncio.run(
        upgrade(settings.broker_url, DeadLetterLimits.from_settings(settings), discard=discard)
    )
    for queue in queues:
        typer.echo(json.dumps({"queue": queue.queue, "state": queue.state.value, "messages": queue.messages}))
    kept = [queue.queue for queue in queues if queue.state is DeadLetterQueueState.KEPT]
    if kept:
        typer.echo(
            f"{len(kept)} queue(s) hold letters from before the limits: look at them (faceproof dlq show), "
            "replay what must run, then run faceproof dlq upgrade --discard",
            err=True,
        )
        raise typer.Exit(1)


def _since(value: str | None) -> datetime | None:
    """An ISO time (UTC if no zone) or a duration like 30m, 24h, 7d."""
    if value is None:
        return None
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if value[:-1].isdigit() and value[-1:] in units:
        return datetime.now(UTC) - timedelta(seconds=int(value[:-1]) * units[value[-1]])
    moment = datetime.fromisoformat(value)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@audit_app.command("list")
def audit_list(
    session: Annotated[str | None, typer.Option("--session", help="Only this session (or flow) id.")] = None,
    since: Annotated[str | None, typer.Option(help="ISO time or a duration: 30m, 24h, 7d.")] = None,
    action: Annotated[str | None, typer.Option(help="e.g. SESSION_DECIDED, SESSION_ERASED")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100_000)] = 100,
) -> None:
    """Audit events, oldest first: who asked, when, what, the outcome and its reasons."""
    from infra.db.audit import AuditLog
    from infra.db.engine import create_engine, session_factory

    try:
        start = _since(since)
    except ValueError:
        typer.echo(f"--since: not a time or duration: {since!r}", err=True)
        raise typer.Exit(2) from None

    async def run() -> list[str]:
        engine = create_engine(load_settings().resolved_database_url)
        try:
            events = await AuditLog(session_factory(engine)).list(
                subject_id=session, since=start, action=action, limit=limit
            )
        finally:
            await engine.dispose()
        return [json.dumps(event.to_dict()) for event in events]

    for line in asyncio.run(run()):
        typer.echo(line)
