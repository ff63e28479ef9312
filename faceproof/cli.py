"""The `faceproof` command: run services, manage the database, API keys and models."""

from __future__ import annotations

import asyncio
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from faceproof.bench_cli import bench_app
from faceproof.bench_room_cli import bench_room
from faceproof.broker_cli import broker_app
from faceproof.database import api_clients, rate_limits
from faceproof.eval_cli import eval_app
from faceproof.ops_cli import audit_app, dlq_app
from infra.settings import Settings, TlsTermination, load_settings

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
bench_app.command("room")(bench_room)
app.add_typer(bench_app, name="bench")
app.add_typer(broker_app, name="broker")
app.add_typer(dlq_app, name="dlq")
app.add_typer(audit_app, name="audit")
docs_app = typer.Typer(help="API documents generated from the code.", no_args_is_help=True)
app.add_typer(docs_app, name="docs")

#: Workers that exist so far; `up` starts each of them.
WORKERS = ("matcher", "call-agent", "liveness", "notifier", "ingress")


def _settings() -> Settings:
    settings = load_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return settings


def _service_settings(*, gateway: bool = False, host: str | None = None) -> Settings:
    """Settings of a process that serves (up, gateway, workers): refused when unfit for
    FACEPROOF_ENVIRONMENT, or, where a gateway listens (on ``host`` or FACEPROOF_HOST), when a
    public secret (the development token, a default password) would be served beyond loopback
    (docs/security.md)."""
    from infra.environment import EnvironmentRefused, check_environment

    settings = _settings()
    try:
        check_environment(settings, bind=(host or settings.host) if gateway else None)
    except EnvironmentRefused as refused:
        typer.echo(f"faceproof refuses to start in {settings.environment.value}:", err=True)
        for reason in refused.reasons:
            typer.echo(f"  - {reason}", err=True)
        raise typer.Exit(2) from None
    return settings


def _metrics_env(settings: Settings, index: int) -> dict[str, str] | None:
    """`up` runs every service on one host: each gets its own metrics port (metrics_port + index;
    the gateway is index 0)."""
    if not settings.metrics_port:
        return None
    return {**os.environ, "FACEPROOF_METRICS_PORT": str(settings.metrics_port + index)}


def _telemetry(settings: Settings, process: str) -> None:
    """Tracing, and the process's /metrics server; a clear error when either cannot start."""
    from infra.telemetry import start_telemetry
    from infra.telemetry.tracing import TracingUnavailable

    try:
        start_telemetry(settings, process)
    except TracingUnavailable as error:
        typer.echo(f"faceproof {process}: {error}", err=True)
        raise typer.Exit(2) from None
    except OSError as error:
        typer.echo(f"faceproof {process}: metrics port {settings.metrics_port}: {error}", err=True)
        raise typer.Exit(2) from None


@app.command()
def up() -> None:
    """Start every service (gateway and each worker as its own process) until Ctrl-C."""
    from faceproof.preflight import check_broker, check_models
    from faceproof.supervisor import Child, service_argv, supervise
    from infra.db.migrate import upgrade

    settings = _service_settings(gateway=True)
    upgrade(settings.resolved_database_url)
    check_broker(settings)
    check_models(settings)
    children = [Child("gateway", service_argv("gateway"), env=_metrics_env(settings, 0))]
    children += [
        Child(name, service_argv("worker", name), env=_metrics_env(settings, index))
        for index, name in enumerate(WORKERS, start=1)
    ]
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
    from services.gateway.limits import MAX_HEADER_BYTES

    settings = _service_settings(gateway=True, host=host)
    configure_logging(settings.log_level, "gateway")
    _telemetry(settings, "gateway")  # /metrics on FACEPROOF_METRICS_PORT, not on the API port
    native = settings.tls_termination is TlsTermination.NATIVE
    uvicorn.run(
        create_app(settings, migrate=migrate),
        host=host or settings.host,
        port=port or settings.port,
        log_config=None,
        access_log=False,
        ssl_certfile=settings.tls_cert_file if native else None,
        ssl_keyfile=settings.tls_key_file if native else None,
        proxy_headers=settings.tls_termination is TlsTermination.PROXY,
        # h11, not httptools: httptools reads headers of any size (one 200 MiB header: 280 MB of
        # memory); h11 refuses a request line and headers over MAX_HEADER_BYTES with 400
        http="h11",
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,
        limit_concurrency=settings.max_connections,
    )


@worker_app.command("matcher")
def worker_matcher() -> None:
    """Run the matcher: CompareFaces in, FacesCompared out."""
    from infra.logs import configure_logging
    from services.matcher.main import serve

    settings = _service_settings()
    configure_logging(settings.log_level, "matcher")
    _telemetry(settings, "matcher")
    asyncio.run(serve(settings))


@worker_app.command("call-agent")
def worker_call_agent() -> None:
    """Run a call agent: answers WebRTC offers, samples frames, draws the instructions."""
    from infra.logs import configure_logging
    from services.call_agent.main import serve

    settings = _service_settings()
    configure_logging(settings.log_level, "call-agent")
    _telemetry(settings, "call-agent")
    asyncio.run(serve(settings))


@worker_app.command("liveness")
def worker_liveness() -> None:
    """Run a liveness worker: analyses frames, runs the challenges, decides, expires sessions."""
    from infra.logs import configure_logging
    from services.liveness.main import serve

    settings = _service_settings()
    configure_logging(settings.log_level, "liveness")
    _telemetry(settings, "liveness")
    asyncio.run(serve(settings))


@worker_app.command("notifier")
def worker_notifier() -> None:
    """Run a notifier: ends video-call flows (references, match) and delivers their callbacks."""
    from infra.logs import configure_logging
    from services.notifier.main import serve

    settings = _service_settings()
    configure_logging(settings.log_level, "notifier")
    _telemetry(settings, "notifier")
    asyncio.run(serve(settings))


@worker_app.command("ingress")
def worker_ingress() -> None:
    """Run the public broker ingress: upstream commands in (validated as HTTP), public events out."""
    from infra.logs import configure_logging
    from services.ingress.main import serve

    settings = _service_settings()
    configure_logging(settings.log_level, "ingress")
    _telemetry(settings, "ingress")
    asyncio.run(serve(settings))


@db_app.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Apply migrations (SQLite by default, Postgres with FACEPROOF_DATABASE_URL)."""
    from infra.db.migrate import current, upgrade

    settings = _settings()
    upgrade(settings.resolved_database_url, revision)
    typer.echo(f"database at revision {current(settings.resolved_database_url)}")


RateOption = Annotated[float | None, typer.Option("--rate", min=0.001, help="Steady requests per second")]
BurstOption = Annotated[int | None, typer.Option("--burst", min=1, help="Bucket size (requests at once)")]
QuotaOption = Annotated[int | None, typer.Option("--monthly-quota", min=0, help="Requests per month (UTC)")]


@keys_app.command("create")
def keys_create(
    name: str,
    rate: RateOption = None,
    burst: BurstOption = None,
    monthly_quota: QuotaOption = None,
    admin: Annotated[bool, typer.Option("--admin", help="May read every client's usage")] = False,
) -> None:
    """Create an API client and print its key (shown once, stored hashed). Limits default to
    50 requests/s, a burst of 100 and 100,000 requests a month."""
    from infra.db.errors import AlreadyExists

    async def run() -> str:
        async with api_clients(_settings()) as clients:
            client, key = await clients.create(
                name, rate_per_second=rate, burst=burst, monthly_quota=monthly_quota
            )
        if admin:
            async with rate_limits(_settings()) as limits:
                await limits.set_limits(client.id, admin=True)
        return key

    try:
        key = asyncio.run(run())
    except AlreadyExists:
        typer.echo(f"an API client named {name!r} exists already", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"API key for {name} (shown once, keep it secret):\n{key}")


@keys_app.command("set")
def keys_set(
    name: str,
    rate: RateOption = None,
    burst: BurstOption = None,
    monthly_quota: QuotaOption = None,
    admin: Annotated[
        bool | None, typer.Option("--admin/--no-admin", help="May read every client's usage")
    ] = None,
) -> None:
    """Change an API client's limits (by name or id); only the options given change."""

    async def run() -> bool:
        async with rate_limits(_settings()) as limits:
            return await limits.set_limits(
                name, rate_per_second=rate, burst=burst, monthly_quota=monthly_quota, admin=admin
            )

    if not asyncio.run(run()):
        typer.echo(f"no API client {name!r}", err=True)
        raise typer.Exit(1)
    typer.echo(f"updated {name}")


@keys_app.command("usage")
def keys_usage(name: Annotated[str | None, typer.Argument(help="One client (name or id)")] = None) -> None:
    """Requests this month (UTC) beside each client's limits, one JSON line per client."""

    async def run() -> list[dict[str, object]]:
        async with rate_limits(_settings()) as limits:
            return [
                {
                    "name": row.name,
                    "id": row.client_key,
                    "period": row.period,
                    "requests": row.requests,
                    "monthlyQuota": row.limits.monthly_quota,
                    "ratePerSecond": row.limits.rate_per_second,
                    "burst": row.limits.burst,
                    "admin": row.admin,
                    "revoked": row.revoked,
                }
                for row in await limits.usage(datetime.now(UTC), name)
            ]

    rows = asyncio.run(run())
    if name is not None and not rows:
        typer.echo(f"no API client {name!r}", err=True)
        raise typer.Exit(1)
    for row in rows:
        typer.echo(json.dumps(row))


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
                    "ratePerSecond": str(client.rate_per_second),
                    "burst": str(client.burst),
                    "monthlyQuota": str(client.monthly_quota),
                    "admin": "true" if client.admin else "false",
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


@keys_app.command("callback-key")
def keys_callback_key(name: str) -> None:
    """Print the key that signs a client's call-flow callbacks (by name or id; `static` for
    FACEPROOF_API_TOKEN's client), for that client's controller. Derived from
    FACEPROOF_CALLBACK_SECRET and the client's id: each client verifies with its own key, so no
    client's flow can produce a callback another client's controller accepts. A flow started
    with `callbackSecret` is signed with that secret instead."""
    from services.gateway.auth import STATIC_OWNER
    from services.notifier.outcome import client_callback_key

    settings = _settings()
    secret = settings.callback_signing_secret
    if secret is None:
        typer.echo("FACEPROOF_CALLBACK_SECRET is not set: callbacks are not signed", err=True)
        raise typer.Exit(1)

    async def client_id() -> str | None:
        if name == STATIC_OWNER:
            return STATIC_OWNER
        async with rate_limits(settings) as limits:
            rows = await limits.usage(datetime.now(UTC), name)
        return rows[0].client_key if rows else None

    owner = asyncio.run(client_id())
    if owner is None:
        typer.echo(f"no API client {name!r}", err=True)
        raise typer.Exit(1)
    typer.echo(client_callback_key(secret, owner))


@docs_app.command("generate")
def docs_generate() -> None:
    """Write docs/asyncapi.json (broker messages) and docs/openapi.json (HTTP API) from the code."""
    from faceproof.apidocs import generate

    for path in generate():
        typer.echo(f"wrote {path}")


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
    """Download the official model files (or copy from a mirror), verifying every checksum.

    Without --pack (what compose and the chart run), the files the services need (the liveness
    worker's and FACEPROOF_MODEL_PACK's detector) must be among them: it fails before fetching
    anything otherwise, rather than leave a worker that cannot start."""
    from faces.errors import ModelError
    from faces.fetch import fetch_models
    from faces.packs import get_pack
    from services.liveness.analysis import MODEL_FILES

    settings = _settings()
    target = dest or settings.resolved_models_dir
    required = () if pack else (*MODEL_FILES, get_pack(settings.model_pack, target).detector)
    try:
        paths = fetch_models(target, pack=pack, from_dir=from_dir, required=required)
    except ModelError as error:
        typer.echo(f"faceproof models fetch: {error}", err=True)
        raise typer.Exit(1) from None
    for path in paths:
        typer.echo(f"ok {path}")
