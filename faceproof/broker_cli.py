"""`faceproof broker ...`: RabbitMQ users for upstream systems (docs/public-api.md).

An upstream user may publish only to the public command exchange, bind only its own queues
(``upstream.<user>.*``) to the public events exchange, and only with routing keys of its own API
client (``<client id>.*``, a RabbitMQ topic permission); every internal exchange is refused by
RabbitMQ itself.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated

import typer

from contracts.routing import PUBLIC_COMMANDS_EXCHANGE, PUBLIC_EVENTS_EXCHANGE
from infra.db.engine import create_engine, session_factory
from infra.db.ingress import BrokerUsers
from infra.settings import Settings, load_settings

__all__ = ["UpstreamPermissions", "broker_app", "upstream_permissions"]

broker_app = typer.Typer(
    help="RabbitMQ users of upstream systems (public command API).", no_args_is_help=True
)

#: No dots: each user's ``upstream.<user>.`` namespace (queues, reply_to) must not contain another's.
_USER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$")


@dataclass(frozen=True)
class UpstreamPermissions:
    """RabbitMQ permissions (regular expressions) of one upstream user."""

    configure: str
    write: str
    read: str
    #: Topic permission on the public events exchange: the binding keys it may use.
    events_read: str


def upstream_permissions(user: str, client_id: str) -> UpstreamPermissions:
    own = rf"^upstream\.{re.escape(user)}\..*"
    commands = "^" + re.escape(PUBLIC_COMMANDS_EXCHANGE) + "$"
    events = "^" + re.escape(PUBLIC_EVENTS_EXCHANGE) + "$"
    return UpstreamPermissions(
        configure=own,
        write=f"{commands}|{own}",
        read=rf"{events}|{own}|^amq\.rabbitmq\.reply-to$",
        events_read="^" + re.escape(client_id) + r"\.",
    )


def setup_commands(vhost: str, user: str, password: str, client_id: str) -> list[list[str]]:
    """The rabbitmqctl invocations that create the vhost, the user and its permissions."""
    perms = upstream_permissions(user, client_id)
    return [
        ["add_vhost", vhost],
        ["add_user", user, password],
        ["set_permissions", "-p", vhost, user, perms.configure, perms.write, perms.read],
        ["set_topic_permissions", "-p", vhost, user, PUBLIC_EVENTS_EXCHANGE, "^$", perms.events_read],
    ]


@asynccontextmanager
async def _broker_users(settings: Settings) -> AsyncIterator[BrokerUsers]:
    engine = create_engine(settings.resolved_database_url)
    try:
        yield BrokerUsers(session_factory(engine))
    finally:
        await engine.dispose()


def _ctl(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=60, check=False
    )


@broker_app.command("setup")
def setup(
    user: Annotated[str, typer.Option(help="The upstream system's RabbitMQ user")],
    client: Annotated[str, typer.Option(help="The API client (name or id) its commands act for")],
    password: Annotated[
        str | None, typer.Option(help="Its password (prompted when not given)", show_default=False)
    ] = None,
    vhost: Annotated[str, typer.Option(help="The virtual host faceproof runs in")] = "/",
    print_only: Annotated[
        bool, typer.Option("--print", help="Print the rabbitmqctl commands instead of running them")
    ] = False,
) -> None:
    """Create (or update) an upstream RabbitMQ user with the public API's permissions only, and map
    it to an API client. Runs rabbitmqctl on this host (use --print for a remote broker)."""
    if not _USER_NAME.match(user):
        typer.echo("the user name may hold letters, digits, '_' and '-' only (no '.')", err=True)
        raise typer.Exit(2)
    settings = load_settings()

    async def link() -> str:
        from infra.db.errors import AlreadyExists, NotFound

        async with _broker_users(settings) as users:
            try:
                return (await users.link(user, client)).client_id
            except AlreadyExists:
                for known in await users.list():
                    if known.user_name == user:
                        return known.client_id
                raise
            except NotFound:
                typer.echo(f"no active API client {client!r} (faceproof keys create)", err=True)
                raise typer.Exit(1) from None

    client_id = asyncio.run(link())
    secret = password or typer.prompt("password", hide_input=True, confirmation_prompt=True)
    commands = setup_commands(vhost, user, secret, client_id)
    if print_only:
        for args in commands:
            shown = ["<password>" if arg == secret else arg for arg in args]
            typer.echo("rabbitmqctl " + " ".join(f"'{arg}'" for arg in shown))
        return
    if shutil.which("rabbitmqctl") is None:
        typer.echo("rabbitmqctl is not on this host: run with --print and apply them there", err=True)
        raise typer.Exit(1)
    for args in commands:
        result = _ctl(args)
        if result.returncode != 0:
            if args[0] == "add_vhost" and "already" in (result.stderr + result.stdout):
                continue
            if args[0] == "add_user" and "already" in (result.stderr + result.stdout):
                result = _ctl(["change_password", user, secret])
                if result.returncode == 0:
                    continue
            typer.echo(f"rabbitmqctl {args[0]} failed: {result.stderr.strip()[:300]}", err=True)
            raise typer.Exit(1)
    typer.echo(f"broker user {user} in vhost {vhost} acts for API client {client_id}")
    typer.echo(f"bind queues named upstream.{user}.* to {PUBLIC_EVENTS_EXCHANGE} with '{client_id}.<event>'")


@broker_app.command("link")
def link(user: str, client: str) -> None:
    """Map an existing RabbitMQ user to an API client (name or id), without touching RabbitMQ."""
    from infra.db.errors import AlreadyExists, NotFound

    async def run() -> str:
        async with _broker_users(load_settings()) as users:
            return (await users.link(user, client)).client_id

    try:
        client_id = asyncio.run(run())
    except (AlreadyExists, NotFound) as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(1) from None
    typer.echo(f"broker user {user} acts for API client {client_id}")


@broker_app.command("unlink")
def unlink(user: str) -> None:
    """Forget a RabbitMQ user's mapping: its commands are rejected (UNAUTHENTICATED) from now on."""

    async def run() -> bool:
        async with _broker_users(load_settings()) as users:
            return await users.unlink(user)

    if not asyncio.run(run()):
        typer.echo(f"no broker user {user!r}", err=True)
        raise typer.Exit(1)
    typer.echo(f"unlinked {user}")


@broker_app.command("users")
def users() -> None:
    """List the upstream RabbitMQ users and their API clients."""

    async def run() -> list[str]:
        async with _broker_users(load_settings()) as known:
            return [f"{u.user_name}\t{u.client_name}\t{u.client_id}" for u in await known.list()]

    for line in asyncio.run(run()):
        typer.echo(line)
