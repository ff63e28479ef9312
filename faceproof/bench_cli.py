"""`faceproof bench ...`: speed benchmarks that print numbers (JSON with --json).

The commands are thin: options in, :mod:`faceproof.bench` does the work, the result is printed.
Heavy imports (onnxruntime, httpx, the face pipeline) happen inside the commands.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

bench_app = typer.Typer(help="Benchmarks (not tests): print numbers, JSON with --json.", no_args_is_help=True)

JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON")]
PackOption = Annotated[str | None, typer.Option(help="Model pack (FACEPROOF_MODEL_PACK)")]
ModelsDirOption = Annotated[
    Path | None, typer.Option(help="Models directory (FACEPROOF_MODELS_DIR, else ../shared/models)")
]


def _print(result: dict[str, Any], as_json: bool) -> None:
    from faceproof.bench.report import render

    typer.echo(render(result, as_json=as_json))


def _fail(error: Exception) -> typer.Exit:
    typer.echo(f"bench: {error}", err=True)
    return typer.Exit(1)


@bench_app.command("matcher")
def bench_matcher(
    as_json: JsonOption = False,
    pack: PackOption = None,
    models_dir: ModelsDirOption = None,
    images: Annotated[
        Path | None,
        typer.Option(
            help="Run on every image under DIR (default: 50 LFW dev-test images + 5 people/ photos)"
        ),
    ] = None,
    max_images: Annotated[int | None, typer.Option(min=1, help="Use at most N images, spread evenly")] = None,
    iterations: Annotated[
        int, typer.Option(min=1, help="Rounds over the images (after a warm-up round)")
    ] = 5,
    threads: Annotated[
        int,
        typer.Option(min=0, help="Intra-op threads per session for the latencies (0: onnxruntime default)"),
    ] = 0,
    sweep_threads: Annotated[
        int, typer.Option(min=0, help="Intra-op threads per session for the faces/s sweep")
    ] = 1,
) -> None:
    """Latency of detection, alignment and embedding (p50/p95), and faces/s at concurrency 1, 2, 4, 8."""
    from faceproof.bench.environment import BenchError, data_dir, list_images
    from faceproof.bench.environment import models_dir as resolve_models
    from faceproof.bench.matcher import MatcherBench, default_images, run_matcher_bench
    from faceproof.bench.stats import evenly
    from faces.errors import FaceError
    from infra.settings import load_settings

    settings = load_settings()
    try:
        chosen = list_images(images) if images is not None else default_images(data_dir())
        if max_images is not None:
            chosen = evenly(chosen, max_images)
        result = run_matcher_bench(
            MatcherBench(
                pack=pack or settings.model_pack,
                models_dir=resolve_models(models_dir, settings),
                images=chosen,
                iterations=iterations,
                latency_threads=threads,
                sweep_threads=sweep_threads,
                embedder_precision=settings.embedder_precision,
            )
        )
    except (BenchError, FaceError) as error:
        raise _fail(error) from None
    _print(result, as_json)


@bench_app.command("compare")
def bench_compare(
    as_json: JsonOption = False,
    workers: Annotated[int, typer.Option(min=1, help="Matcher processes to start")] = 1,
    duration: Annotated[float, typer.Option(min=0.1, help="Seconds of load (upper bound)")] = 20.0,
    concurrency: Annotated[int, typer.Option(min=1, help="Requests in flight (closed loop)")] = 1,
    max_requests: Annotated[int, typer.Option(min=1, help="Requests at most (upper bound)")] = 100_000,
    pairs: Annotated[int, typer.Option(min=1, help="Image pairs from LFW dev-test, sent in turn")] = 10,
    inprocess_rounds: Annotated[
        int,
        typer.Option(
            min=1,
            help="Rounds over the pairs for the in-process baseline before the load, at --concurrency "
            "above 1 (at 1 each request's pair is compared in process right before it)",
        ),
    ] = 5,
    inference_threads: Annotated[
        int | None,
        typer.Option(
            min=0, help="Intra-op threads per model, matchers and in-process (FACEPROOF_INFERENCE_THREADS)"
        ),
    ] = None,
    matcher_concurrency: Annotated[
        int | None, typer.Option(min=1, help="Inference threads per matcher (FACEPROOF_MATCHER_CONCURRENCY)")
    ] = None,
    pack: PackOption = None,
    models_dir: ModelsDirOption = None,
    url: Annotated[
        str | None,
        typer.Option(help="Use the gateway already running at this URL (127.0.0.1/localhost only) instead"),
    ] = None,
    token: Annotated[
        str | None, typer.Option(help="Bearer token for --url (default FACEPROOF_API_TOKEN)")
    ] = None,
    profile: Annotated[
        Path | None,
        typer.Option(
            help="py-spy the gateway and matchers during the load into DIR; top items in the result"
        ),
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option(
            help="A database the bench may migrate and write, e.g. a fresh PostgreSQL one as deployed "
            "(default: a fresh SQLite file)"
        ),
    ] = None,
) -> None:
    """End-to-end POST /v1/compare p50/p95/p99 and requests/s, and the overhead over in-process compare."""
    from faceproof.bench.compare import CompareBench, default_pairs, run_compare_bench
    from faceproof.bench.environment import BenchError, data_dir
    from faceproof.bench.environment import models_dir as resolve_models
    from faces.errors import FaceError
    from infra.settings import load_settings

    settings = load_settings()
    try:
        result = run_compare_bench(
            CompareBench(
                pairs=default_pairs(data_dir(), pairs),
                models_dir=resolve_models(models_dir, settings),
                pack=pack or settings.model_pack,
                broker_url=settings.broker_url,
                workers=workers,
                concurrency=concurrency,
                duration_s=duration,
                max_requests=max_requests,
                url=url,
                token=token if token is not None else settings.static_token,
                inference_threads=settings.inference_threads
                if inference_threads is None
                else inference_threads,
                max_target_faces=settings.max_target_faces,
                matcher_concurrency=matcher_concurrency or settings.matcher_concurrency,
                profile_dir=profile,
                inprocess_rounds=inprocess_rounds,
                database_url=database_url,
            ),
            warn=lambda message: typer.echo(f"warning: {message}", err=True),
        )
    except (BenchError, FaceError, ValueError) as error:
        raise _fail(error) from None
    _print(result, as_json)


@bench_app.command("soak")
def bench_soak(
    as_json: JsonOption = False,
    duration: Annotated[
        float, typer.Option(min=1, help="Seconds of load (compares are sent until then)")
    ] = 120.0,
    rate: Annotated[float, typer.Option(min=0.01, help="Compares per second (open loop, steady)")] = 2.0,
    sessions: Annotated[
        int, typer.Option(min=0, help="Liveness sessions at once (scripted subjects over WebRTC)")
    ] = 2,
    pairs: Annotated[int, typer.Option(min=1, help="Image pairs from LFW dev-test, sent in turn")] = 10,
    request_timeout: Annotated[
        float, typer.Option(min=1, help="Seconds before a compare counts as lost")
    ] = 30.0,
    pack: PackOption = None,
    models_dir: ModelsDirOption = None,
    restart: Annotated[
        list[str] | None,
        typer.Option(
            help="Restart this server under the load: rabbitmq, postgres (repeatable; the stack then runs on "
            "private servers of its own, with the notifier and call flows; exit 1 if a guarantee broke)"
        ),
    ] = None,
    down: Annotated[float, typer.Option(min=0, help="--restart: seconds each server stays down")] = 3.0,
    call_every: Annotated[
        float, typer.Option(min=0.1, help="--restart: seconds between two video-call flows")
    ] = 3.0,
    logs: Annotated[
        Path | None, typer.Option(help="--restart: copy every service's and server's log here at the end")
    ] = None,
) -> None:
    """Minutes of compares at a steady rate plus concurrent liveness sessions on a stack of its own:
    requests sent and answered (lost), compare p50/p95/p99, RSS of every service at start/middle/end.
    With --restart: the broker and/or the database restarted under that load (and video-call flows),
    and the counts of compares, sessions, callbacks and queues that say whether anything was lost."""
    from faceproof.bench.compare import default_pairs
    from faceproof.bench.environment import BenchError, data_dir
    from faceproof.bench.environment import models_dir as resolve_models
    from faceproof.bench.soak import SoakBench, run_soak_bench
    from infra.settings import load_settings

    settings = load_settings()
    if restart:
        from faceproof.bench.restarts import RestartSoak, run_restart_soak

        try:
            outcome = run_restart_soak(
                RestartSoak(
                    pairs=default_pairs(data_dir(), pairs),
                    models_dir=resolve_models(models_dir, settings),
                    pack=pack or settings.model_pack,
                    faults=tuple(restart),
                    duration_s=duration,
                    rate_per_s=rate,
                    sessions=sessions,
                    call_every_s=call_every,
                    down_s=down,
                    logs_dir=logs,
                ),
                warn=lambda message: typer.echo(f"warning: {message}", err=True),
            )
        except (BenchError, ValueError) as error:
            raise _fail(error) from None
        _print(outcome, as_json)
        if outcome["problems"]:
            raise typer.Exit(1)
        return
    try:
        result = run_soak_bench(
            SoakBench(
                pairs=default_pairs(data_dir(), pairs),
                models_dir=resolve_models(models_dir, settings),
                pack=pack or settings.model_pack,
                broker_url=settings.broker_url,
                duration_s=duration,
                rate_per_s=rate,
                sessions=sessions,
                request_timeout_s=request_timeout,
            ),
            warn=lambda message: typer.echo(f"warning: {message}", err=True),
        )
    except (BenchError, ValueError) as error:
        raise _fail(error) from None
    _print(result, as_json)


@bench_app.command("peers")
def bench_peers(
    as_json: JsonOption = False,
    pairs: Annotated[
        Path | None,
        typer.Option(help="Pairs CSV: fold,file_a,file_b,same (default: LFW dev-test's 1,000 pairs)"),
    ] = None,
    images: Annotated[Path | None, typer.Option(help="Directory the pair files are relative to")] = None,
    limit: Annotated[
        int | None, typer.Option(min=1, help="Use N pairs spread over the file (quick run)")
    ] = None,
    threads: Annotated[
        int, typer.Option(min=0, help="Our intra-op threads (1: one core, like the peers; 0: all)")
    ] = 1,
    pack: PackOption = None,
    models_dir: ModelsDirOption = None,
    peers_venv: Annotated[
        Path, typer.Option(help="The peers' own virtual environment (made or updated as needed)")
    ] = Path("var/peers-venv"),
) -> None:
    """Accuracy and images/s of ours, face_recognition (dlib) and deepface (Dlib model) on the same pairs."""
    from faceproof.bench.environment import BenchError, data_dir
    from faceproof.bench.environment import models_dir as resolve_models
    from faceproof.bench.peers import PeersBench, run_peers_bench
    from faces.errors import FaceError
    from infra.settings import load_settings

    settings = load_settings()
    lfw = data_dir() / "faces" / "lfw-devtest"
    pairs_csv = pairs or lfw / "pairs.csv"
    try:
        result = run_peers_bench(
            PeersBench(
                pairs_csv=pairs_csv,
                images_dir=images or pairs_csv.parent,
                models_dir=resolve_models(models_dir, settings),
                pack=pack or "permissive",
                venv=peers_venv.resolve(),
                limit=limit,
                threads=threads,
                embedder_precision=settings.embedder_precision,
            ),
            log=lambda message: typer.echo(f"bench peers: {message}", err=True),
        )
    except (BenchError, FaceError) as error:
        raise _fail(error) from None
    _print(result, as_json)


@bench_app.command("guard")
def bench_guard(
    as_json: JsonOption = False,
    size_mib: Annotated[float, typer.Option(min=0.01, help="Size of each body in MiB")] = 8.0,
    rounds: Annotated[int, typer.Option(min=1, help="Timed rounds per body (after a warm-up)")] = 5,
) -> None:
    """The gateway's request guard per MiB of body (ms/MiB), on an honest compare and crafted bodies:
    the JSON scan alone and the whole middleware (authentication, body read, scan)."""
    from faceproof.bench.guard import GuardBench, run_guard_bench

    _print(run_guard_bench(GuardBench(size_mib=size_mib, rounds=rounds)), as_json)


@bench_app.command("liveness-step")
def bench_liveness_step(
    as_json: JsonOption = False,
    models_dir: ModelsDirOption = None,
    video: Annotated[
        Path | None,
        typer.Option(help="Frames from this video (default ../shared/data/video/liveportrait_d9.mp4)"),
    ] = None,
    sizes: Annotated[
        list[int] | None, typer.Option("--size", min=1, help="Frames per session (repeatable)")
    ] = None,
    repeats: Annotated[int, typer.Option(min=1, help="Sessions per size")] = 3,
    database_url: Annotated[
        str | None,
        typer.Option(help="A database the bench may migrate and write (default: a fresh SQLite file)"),
    ] = None,
    threads: Annotated[
        int, typer.Option(min=1, help="Intra-op threads for the analysis made beforehand")
    ] = 2,
) -> None:
    """The liveness worker's step (one FrameCaptured, analysis left out) in ms per frame for sessions
    of 10, 50 and 200 frames: flat when a step's cost does not grow with the frames before it."""
    from faceproof.bench.environment import BenchError, data_dir
    from faceproof.bench.environment import models_dir as resolve_models
    from faceproof.bench.liveness_step import StepBench, run_step_bench
    from faces.errors import FaceError
    from infra.settings import load_settings

    settings = load_settings()
    try:
        result = run_step_bench(
            StepBench(
                models_dir=resolve_models(models_dir, settings),
                video=video or data_dir() / "video" / "liveportrait_d9.mp4",
                sizes=tuple(sizes) if sizes else (10, 50, 200),
                repeats=repeats,
                database_url=database_url,
                threads=threads,
            )
        )
    except (BenchError, FaceError) as error:
        raise _fail(error) from None
    _print(result, as_json)


@bench_app.command("liveness-capacity")
def bench_liveness_capacity(
    as_json: JsonOption = False,
    sessions: Annotated[
        list[int] | None,
        typer.Option("--sessions", min=1, help="Concurrent sessions (repeatable; default 1 2 4 6 8 10 12)"),
    ] = None,
    workers: Annotated[int, typer.Option(min=1, help="Liveness worker processes to start")] = 1,
    video: Annotated[
        Path | None,
        typer.Option(help="The subjects' video (default ../shared/data/video/liveportrait_d3.mp4)"),
    ] = None,
    challenge: Annotated[
        list[str] | None,
        typer.Option(
            help="A challenge every session draws (repeatable; default LOOK_DOWN and OPEN_MOUTH, which "
            "liveportrait_d3 answers; e.g. LOOK_UP and BLINK with liveportrait_d6)"
        ),
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option(help="A database the bench may migrate and write (default: a fresh SQLite file)"),
    ] = None,
    timeout: Annotated[
        float, typer.Option(min=1, help="Seconds a level may take; sessions undecided by then count so")
    ] = 60.0,
    warmup: Annotated[bool, typer.Option(help="Run one session to its decision first (not reported)")] = True,
    profile: Annotated[
        Path | None, typer.Option(help="py-spy the liveness worker(s) during the sweep into DIR")
    ] = None,
    pack: PackOption = None,
    models_dir: ModelsDirOption = None,
) -> None:
    """Concurrent liveness sessions at 8 fps against the real liveness worker: per N, frames analysed
    per second per session, capture-to-analysis lag, last challenge frame to LivenessDecided
    (p50/p95/max), decisions, worker CPU; the largest N at 8 fps with decisions within 300 ms (p95)."""
    from faceproof.bench.capacity import CapacityBench, run_capacity_bench
    from faceproof.bench.environment import BenchError, data_dir
    from faceproof.bench.environment import models_dir as resolve_models
    from faceproof.bench.room import ANSWERABLE
    from infra.settings import load_settings

    settings = load_settings()
    try:
        result = run_capacity_bench(
            CapacityBench(
                models_dir=resolve_models(models_dir, settings),
                broker_url=settings.broker_url,
                video=video or data_dir() / "video" / "liveportrait_d3.mp4",
                sessions=tuple(sessions) if sessions else (1, 2, 4, 6, 8, 10, 12),
                challenges=tuple(challenge) if challenge else tuple(ANSWERABLE),
                workers=workers,
                pack=pack or settings.model_pack,
                database_url=database_url,
                timeout_s=timeout,
                warmup=warmup,
                profile_dir=profile,
            ),
            warn=lambda message: typer.echo(f"warning: {message}", err=True),
        )
    except BenchError as error:
        raise _fail(error) from None
    _print(result, as_json)
