"""Checks `faceproof up` makes before starting anything, with the fix in the message."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

import typer

from infra.settings import Settings


def check_broker(settings: Settings) -> None:
    url = urlsplit(settings.broker_url)
    host, port = url.hostname or "127.0.0.1", url.port or 5672
    try:
        socket.create_connection((host, port), timeout=3).close()
    except OSError:
        typer.echo(
            f"RabbitMQ is not reachable at {host}:{port}. Start it (`rabbitmq-server -detached`) "
            "or set FACEPROOF_BROKER_URL.",
            err=True,
        )
        raise typer.Exit(2) from None


def check_models(settings: Settings) -> None:
    from faces.errors import ModelError
    from faces.packs import get_pack, resolve_files

    models_dir = settings.resolved_models_dir
    try:
        resolve_files(get_pack(settings.model_pack, models_dir), models_dir)
    except ModelError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(2) from None
