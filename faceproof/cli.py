"""The `faceproof` command: run services, manage the database, API keys and models."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import typer

from faceproof.bench_cli import bench_app
from faceproof.database import api_clients
from faceproof.eval_cli import eval_app
from infra.settings import Settings, load_settings

app = typer.Typer(
    help="faceproof: face liveness and face matching, self-hosted.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # locals may hold keys or images
)
db_app = typer.Typer(help="Database migrations.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys (stored hashed; a new key is shown once).", no_args_is_help=True)
models_app = typer.Typer(help="Model packs and files.", no_args_is_help=True)
worker_app = typer.Typer(help="Run one worker.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(keys_app, name="keys")
app.add_typer(models_app, name="models")
app.add_typer(worker_app, name="worker")
app.add_typer(eval_app, name="eval")
app.add_typer(bench_app, name="bench")

#: Workers that exist so far; `up` starts each of them.
WORKERS = ("matcher", "call-agent", "liveness", "notifier")


def _settings() -> Settings:
    settings = load_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return settings


@app.command()
def up() -> None:
    """Start every service (gateway and each worker as its own process) until Ctrl-C."""
    from faceproof.preflight import check_broker, check_models
    from faceproof.supervisor import Child, service_argv, supervise
    from infra.db.migrate import upgrade

    settings = _settings()
    upgrade(settings.resolved_database_url)
    check_broker(settings)
    check_models(settings)
    children = [Child("gateway", service_argv("gateway"))]
    children += [Child(name, service_argv("worker", name)) for name in WORKERS]
    raise typer.Exit(supervise(children))


@app.command()
def gateway(
    host: Annotated[str | None, typer.Option(help="Bind address (FACEPROOF_HOST)")] = None,
    port: Annotated[int | None, typer.Option(help="Port (FACEPROOF_PORT)")] = None,
    migrate: Annotated[bool, typer.Option(help="Apply database migrations at start")] = False,
) -> None:
    """Run the HTTP gateway."""
    import uvicorn

    from infra.logs import configure_logging
    from services.gateway.app import create_app

    settings = _settings()
    configure_logging(settings.log_level, "gateway")
    uvicorn.run(
        create_app(settings, migrate=migrate),
        host=host or settings.host,
        port=port or settings.port,
        log_config=None,
        access_log=False,
    )


@worker_app.command("matcher")
def worker_matcher() -> None:
    """Run the matcher: CompareFaces in, FacesCompared out."""
    from infra.logs import configure_logging
    from services.matcher.main import serve

    settings = _settings()
    configure_logging(settings.log_level, "matcher")
    asyncio.run(serve(settings))


@worker_app.command("call-agent")
def worker_call_agent() -> None:
    """Run a call agent: answers WebRTC offers, samples frames, draws the instructions."""
    from infra.logs import configure_logging
    from services.call_agent.main import serve

    settings = _settings()
    configure_logging(settings.log_level, "call-agent")
    asyncio.run(serve(settings))


@worker_app.command("liveness")
def worker_liveness() -> None:
    """Run a liveness worker: analyses frames, runs the challenges, decides, expires sessions."""
    from infra.logs import configure_logging
    from services.liveness.main import serve

    settings = _settings()
    configure_logging(settings.log_level, "liveness")
    asyncio.run(serve(settings))


@worker_app.command("notifier")
def worker_notifier() -> None:
    """Run a notifier: ends video-call flows (references, match) and delivers their callbacks."""
    from infra.logs import configure_logging
    from services.notifier.main import serve

    settings = _settings()
    configure_logging(settings.log_level, "notifier")
    asyncio.run(serve(settings))


@db_app.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Apply migrations (SQLite by default, Postgres with FACEPROOF_DATABASE_URL)."""
    from infra.db.migrate import current, upgrade

    settings = _settings()
    upgrade(settings.resolved_database_url, revision)
    typer.echo(f"database at revision {current(settings.resolved_database_url)}")


@keys_app.command("create")
def keys_create(name: str) -> None:
    """Create an API client and print its key (shown once, stored hashed)."""
    from infra.db.errors import AlreadyExists

    async def run() -> str:
        async with api_clients(_settings()) as clients:
            _, key = await clients.create(name)
            return key

    try:
        key = asyncio.run(run())
    except AlreadyExists:
        typer.echo(f"an API client named {name!r} exists already", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"API key for {name} (shown once, keep it secret):\n{key}")


@keys_app.command("list")
def keys_list() -> None:
    """List API clients (key prefixes only)."""

    async def run() -> list[dict[str, str | None]]:
        async with api_clients(_settings()) as clients:
            return [
                {
                    "name": client.name,
                    "id": client.id,
                    "keyPrefix": client.key_prefix,
                    "created": client.created_at.isoformat(),
                    "revoked": client.revoked_at.isoformat() if client.revoked_at else None,
                }
                for client in await clients.list()
            ]

    for row in asyncio.run(run()):
        typer.echo(json.dumps(row))


@keys_app.command("revoke")
def keys_revoke(name: str) -> None:
    """Revoke an API client's key (by name or id)."""

    async def run() -> bool:
        async with api_clients(_settings()) as clients:
            return await clients.revoke(name)

    if not asyncio.run(run()):
        typer.echo(f"no active API client {name!r}", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {name}")


@models_app.command("list")
def models_list() -> None:
    """Show the model packs, their licences and which one is in use."""
    from faces.packs import list_packs

    settings = _settings()
    for pack in list_packs(settings.resolved_models_dir):
        marker = "*" if pack.name == settings.model_pack else " "
        use = "commercial use allowed" if pack.commercial_use else "NON-COMMERCIAL"
        typer.echo(f"{marker} {pack.name:14} {use:24} {pack.licence_summary}")


@models_app.command("fetch")
def models_fetch(
    pack: Annotated[str | None, typer.Option(help="Only this pack's files (default: every pack's)")] = None,
    from_dir: Annotated[
        Path | None, typer.Option("--from", help="Copy from a local mirror, not the internet")
    ] = None,
    dest: Annotated[Path | None, typer.Option(help="Models directory (FACEPROOF_MODELS_DIR)")] = None,
) -> None:
    """Download the official model files (or copy from a mirror), verifying every checksum."""
    from faces.fetch import fetch_models

    target = dest or _settings().resolved_models_dir
    for path in fetch_models(target, pack=pack, from_dir=from_dir):
        typer.echo(f"ok {path}")
