"""`faceproof broker ...`: RabbitMQ users for upstream systems (docs/public-api.md).

An upstream user may publish only to the public command exchange, bind only its own queues
(``upstream.<user>.*``) to the public events exchange, and only with routing keys of its own API
client (``<client id>.*``, a RabbitMQ topic permission); every internal exchange is refused by
RabbitMQ itself.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated

import typer

from contracts.routing import INGRESS_COMMANDS, PUBLIC_COMMANDS_EXCHANGE, PUBLIC_EVENTS_EXCHANGE
from infra.db.engine import create_engine, session_factory
from infra.db.ingress import BrokerUsers
from infra.settings import Settings, load_settings

__all__ = ["UpstreamLimits", "UpstreamPermissions", "broker_app", "setup_commands", "upstream_permissions"]

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


#: The operator policy that bounds every upstream user's queues (``upstream.<user>.*``).
UPSTREAM_POLICY = "faceproof-upstream-queues"
#: The operator policy that bounds how long a public command waits in the ingress's queue: an
#: upstream publisher sets its messages' expiration as it likes, and a compare carries two photos.
INGRESS_POLICY = "faceproof-ingress-commands"


@dataclass(frozen=True)
class UpstreamLimits:
    """What one upstream user may hold in RabbitMQ. Its permissions let it declare queues of its
    own and publish into them (its reply queues, its event queues); unbounded, one user could
    fill the broker's memory or disk, and RabbitMQ's alarm then blocks every publisher, faceproof's
    workers included."""

    max_connections: int = 16
    max_channels: int = 128
    #: Per queue: past it the oldest messages are dropped (an operator policy: the user's own
    #: ``x-max-length-bytes`` may only lower it).
    max_queue_bytes: int = 64 * 1024 * 1024
    #: A message left unread this long is dropped (the deployment's retention period).
    message_ttl_s: int = 86_400
    #: A queue nobody uses this long is deleted.
    idle_queue_s: int = 86_400
    #: How long a public command may wait in the ingress's queue (``Settings.public_command_ttl_s``).
    command_ttl_s: int = 21_600


def setup_commands(
    vhost: str, user: str, client_id: str, limits: UpstreamLimits | None = None
) -> list[list[str]]:
    """The rabbitmqctl invocations that create the vhost, the user, its permissions and its limits
    (``add_user`` reads the password from its standard input: on the command line, ``ps`` shows it)."""
    perms = upstream_permissions(user, client_id)
    limits = limits or UpstreamLimits()
    user_limits = {"max-connections": limits.max_connections, "max-channels": limits.max_channels}
    queue_limits = {
        "max-length-bytes": limits.max_queue_bytes,
        "message-ttl": limits.message_ttl_s * 1000,
        "expires": limits.idle_queue_s * 1000,
    }
    return [
        ["add_vhost", vhost],
        ["add_user", user],
        ["set_permissions", "-p", vhost, user, perms.configure, perms.write, perms.read],
        ["set_topic_permissions", "-p", vhost, user, PUBLIC_EVENTS_EXCHANGE, "^$", perms.events_read],
        ["set_user_limits", user, json.dumps(user_limits)],
        [
            "set_operator_policy", "-p", vhost, "--apply-to", "queues",
            UPSTREAM_POLICY, r"^upstream\.", json.dumps(queue_limits),
        ],
        [
            "set_operator_policy", "-p", vhost, "--apply-to", "queues",
            INGRESS_POLICY, f"^{re.escape(INGRESS_COMMANDS.queue)}$",
            json.dumps({"message-ttl": limits.command_ttl_s * 1000}),
        ],
    ]  # fmt: skip


@asynccontextmanager
async def _broker_users(settings: Settings) -> AsyncIterator[BrokerUsers]:
    engine = create_engine(settings.resolved_database_url)
    try:
        yield BrokerUsers(session_factory(engine))
    finally:
        await engine.dispose()


def _ctl(args: list[str], secret: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["rabbitmqctl", "-q", *args], input=secret, capture_output=True, text=True, timeout=60, check=False
    )


def _check_user_name(user: str) -> None:
    """A dotted name's namespace would lie inside another's: user ``a``'s permissions
    (``upstream.a.*``) would cover ``a.b``'s queues (``upstream.a.b.*``), client tokens included."""
    if not _USER_NAME.match(user):
        typer.echo("the user name may hold letters, digits, '_' and '-' only (no '.')", err=True)
        raise typer.Exit(2)


@broker_app.command("setup")
def setup(
    user: Annotated[str, typer.Option(help="The upstream system's RabbitMQ user")],
    client: Annotated[str, typer.Option(help="The API client (name or id) its commands act for")],
    password: Annotated[
        str | None, typer.Option(help="Its password (prompted when not given)", show_default=False)
    ] = None,
    vhost: Annotated[str, typer.Option(help="The virtual host faceproof runs in")] = "/",
    max_queue_bytes: Annotated[
        int, typer.Option(min=1, help="Bytes one of its queues may hold (the oldest go first)")
    ] = UpstreamLimits.max_queue_bytes,
    max_connections: Annotated[
        int, typer.Option(min=1, help="Connections it may open")
    ] = UpstreamLimits.max_connections,
    print_only: Annotated[
        bool, typer.Option("--print", help="Print the rabbitmqctl commands instead of running them")
    ] = False,
) -> None:
    """Create (or update) an upstream RabbitMQ user with the public API's permissions only, bounded
    (connections, channels; its queues' bytes, message age and idle time: an operator policy on
    upstream.*; how long its commands wait for the ingress: one on ingress.public-commands), and map
    it to an API client. Runs rabbitmqctl on this host (use --print for a
    remote broker)."""
    _check_user_name(user)
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
    limits = UpstreamLimits(
        max_connections=max_connections,
        max_channels=8 * max_connections,
        max_queue_bytes=max_queue_bytes,
        message_ttl_s=settings.retention_s,
        command_ttl_s=settings.public_command_ttl_s,
    )
    commands = setup_commands(vhost, user, client_id, limits)
    if print_only:
        for args in commands:
            stdin = "   # reads the password from its standard input" if args[0] == "add_user" else ""
            typer.echo("rabbitmqctl " + " ".join(f"'{arg}'" for arg in args) + stdin)
        return
    if shutil.which("rabbitmqctl") is None:
        typer.echo("rabbitmqctl is not on this host: run with --print and apply them there", err=True)
        raise typer.Exit(1)
    secret = password or typer.prompt("password", hide_input=True, confirmation_prompt=True)
    for args in commands:
        result = _ctl(args, secret if args[0] == "add_user" else None)
        if result.returncode != 0:
            if args[0] == "add_vhost" and "already" in (result.stderr + result.stdout):
                continue
            if args[0] == "add_user" and "already" in (result.stderr + result.stdout):
                result = _ctl(["change_password", user], secret)
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

    _check_user_name(user)

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
