"""`faceproof bench room`: a video call through a real mediasoup room (faceproof/bench/room.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from faceproof.bench_cli import JsonOption, ModelsDirOption, PackOption

__all__ = ["bench_room"]


def bench_room(
    as_json: JsonOption = False,
    repeats: Annotated[int, typer.Option(min=1, help="Flows, one after the other")] = 3,
    models_dir: ModelsDirOption = None,
    pack: PackOption = None,
    video: Annotated[
        Path | None,
        typer.Option(help="The subject's video (default ../shared/data/video/liveportrait_d3.mp4)"),
    ] = None,
) -> None:
    """Video calls through a real mediasoup 3.8.4 room (scripts/mediasoup.sh builds it once): frames
    per second the call agent took from the subject's video and the liveness worker analysed, and
    the time from the frame that completed the last challenge leaving the subject to LivenessDecided."""
    from faceproof.bench.environment import BenchError, data_dir
    from faceproof.bench.environment import models_dir as resolve_models
    from faceproof.bench.report import render
    from faceproof.bench.room import RoomBench, run_room_bench
    from infra.settings import load_settings

    settings = load_settings()
    try:
        result = run_room_bench(
            RoomBench(
                models_dir=resolve_models(models_dir, settings),
                broker_url=settings.broker_url,
                video=video or data_dir() / "video" / "liveportrait_d3.mp4",
                repeats=repeats,
                pack=pack or settings.model_pack,
            ),
            warn=lambda message: typer.echo(f"warning: {message}", err=True),
        )
    except BenchError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None
    typer.echo(render(result, as_json=as_json))
