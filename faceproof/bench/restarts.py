"""`faceproof bench soak --restart rabbitmq --restart postgres`: the soak's load while the broker and
the database restart, and the counts that say whether anything was lost.

The stack (gateway, matcher, call agent, liveness worker, notifier; a local object store) runs on a
**private** RabbitMQ node and a **private** Postgres cluster (:mod:`faceproof.bench.servers`: their
own ports and data directories, never the shared servers), so they can be stopped and started again.
While compares stream (the soak's open loop), liveness sessions run (scripted subjects over real
WebRTC) and video-call flows start (every ``call_every_s``; their room is a port nobody listens on,
so each must end in one failure callback), the run:

1. restarts RabbitMQ (``rabbitmqctl shutdown``, ``down_s`` seconds down, started again on the same
   data): then waits until every queue consumed before has its consumers again;
2. restarts Postgres (``pg_ctl stop -m fast``, ``down_s`` seconds down, started again).

After the load it waits for every accepted call flow's callback and every session's end, then reads
every queue of the node. ``problems`` lists what broke a guarantee (docs/reliability.md, "Faults"):
a compare without an answer, one answered past its deadline or with another error than the
documented 503/504 problem+json, a session without a terminal status or without exactly one
``SessionFinished`` event, an accepted call flow without exactly one callback, a message left ready
or unacknowledged in a queue or dead-lettered, consumers not back after the broker returned.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Final

import aio_pika
import httpx

from contracts.routing import ALL_ROUTES, EVENTS_EXCHANGE
from faceproof.bench.compare import ImagePair, compare_body
from faceproof.bench.environment import BenchError, machine_info
from faceproof.bench.servers import PrivatePostgres, PrivateRabbitMQ, QueueState
from faceproof.bench.soak import CompareTally, SessionTally, SoakBench, _compares, _session_loops
from faceproof.bench.stack import Stack, StackConfig, free_port, running_stack, terminate_on_sigterm

__all__ = ["FAULTS", "RestartSoak", "run_restart_soak"]

Warn = Callable[[str], None]
FAULTS: Final = ("rabbitmq", "postgres")
#: A durable quorum queue of the run's own on ``session.finished`` (it survives the broker's restart).
FINISHED_QUEUE: Final = "bench.session-finished"
#: The documented answers of a dependency that is down (problem+json, with Retry-After).
DOCUMENTED: Final = frozenset({"503", "504"})
#: A second end of the same flow would come within this, after the first.
_SETTLE_S: Final = 5.0


@dataclass(frozen=True)
class RestartSoak:
    pairs: Sequence[ImagePair]
    models_dir: Path
    pack: str
    faults: tuple[str, ...] = FAULTS
    duration_s: float = 90.0
    rate_per_s: float = 1.0
    sessions: int = 1
    call_every_s: float = 3.0
    down_s: float = 3.0
    compare_timeout_s: float = 15.0
    #: How long after the load every accepted call flow may take to be called back.
    drain_timeout_s: float = 120.0
    #: Where to copy the services' logs (and the servers') at the end; None: they are removed.
    logs_dir: Path | None = None


# --------------------------------------------------------------------------- the controller's side


@dataclass
class CallbackReceiver:
    """The controller's callback endpoints: ``GET /list/TOKEN`` (no references) and
    ``PUT /success|failure/TOKEN``, counted per token."""

    received: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    port: int = field(default_factory=free_port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return

            def _answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                self._answer(200 if self.path.startswith("/list/") else 404, b"[]")

            def do_PUT(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                parts = self.path.strip("/").split("/")
                if len(parts) != 2 or parts[0] not in ("success", "failure"):
                    self._answer(404, b"{}")
                    return
                with lock:
                    receiver.received[parts[1]] += 1
                    receiver.outcomes[parts[0]] += 1
                self._answer(200, b"{}")

        return Handler

    @contextmanager
    def serving(self) -> Iterator[CallbackReceiver]:
        server = ThreadingHTTPServer(("127.0.0.1", self.port), self.handler())
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            server.shutdown()
            server.server_close()


@dataclass
class CallTally:
    accepted: list[str] = field(default_factory=list)
    refused: Counter[str] = field(default_factory=Counter)
    refused_tokens: list[str] = field(default_factory=list)

    def report(self, receiver: CallbackReceiver) -> dict[str, Any]:
        callbacks = Counter(receiver.received[token] for token in self.accepted)
        return {
            "started": len(self.accepted),
            "refused": dict(self.refused),
            "callbacks_per_flow": {str(count): flows for count, flows in sorted(callbacks.items())},
            "outcomes": dict(receiver.outcomes),
            "callbacks_for_refused": sum(receiver.received[token] for token in self.refused_tokens),
        }


async def _call_flows(
    client: httpx.AsyncClient,
    receiver: CallbackReceiver,
    tally: CallTally,
    every_s: float,
    done: Callable[[], bool],
) -> None:
    while not done():
        token = f"soak-{secrets.token_hex(8)}"
        body = {
            "ws_url": f"ws://127.0.0.1:{free_port()}/?roomId=soak&peerId=agent",  # nobody listens
            "callback_base_url": receiver.url,
            "token": token,
            "lang": "en",
        }
        try:
            response = await client.post("/v1/calls", json=body)
            status = str(response.status_code)
        except httpx.HTTPError as error:
            status = type(error).__name__
        if status == "202":
            tally.accepted.append(token)
        else:
            tally.refused[status] += 1
            tally.refused_tokens.append(token)
        await asyncio.sleep(every_s)


# --------------------------------------------------------------------------- the faults


@dataclass
class FaultLog:
    events: list[dict[str, Any]] = field(default_factory=list)
    #: Seconds after the last fault until a compare and a session creation succeeded again.
    recovered_s: float | None = None
    #: When (time.monotonic) the faults were over and the recovery probed; None while they last.
    over_at: float | None = None


@dataclass(frozen=True)
class LoadWindow:
    """The load lasts ``duration_s`` at least, and ``tail_s`` past the last fault's recovery at
    least (a slow broker restart must not leave the database restart without load)."""

    ends_at: float
    faults: FaultLog
    tail_s: float = 10.0

    def done(self) -> bool:
        over = self.faults.over_at
        return over is not None and time.monotonic() >= max(self.ends_at, over + self.tail_s)


def _consumed(rabbit: PrivateRabbitMQ) -> set[str]:
    routes = {route.queue for route in ALL_ROUTES}
    return {name for name, state in rabbit.queues().items() if name in routes and state.consumers > 0}


def _consumed_or_none(rabbit: PrivateRabbitMQ) -> set[str]:
    """:func:`_consumed`, or nothing when ``rabbitmqctl`` could not tell this time."""
    try:
        return _consumed(rabbit)
    except BenchError:
        return set()


def _restart_rabbitmq(
    rabbit: PrivateRabbitMQ, consumed: set[str], down_s: float, started: float
) -> dict[str, Any]:
    at = time.monotonic()
    rabbit.restart(down_s)
    up = time.monotonic()
    missing = set(consumed)
    while missing and time.monotonic() < up + 120:
        time.sleep(0.5)
        try:
            missing = consumed - _consumed(rabbit)
        except BenchError:
            continue
    return {
        "fault": "rabbitmq restart",
        "at_s": round(at - started, 1),
        "unavailable_s": round(up - at, 1),
        "consumers_back_s": None if missing else round(time.monotonic() - up, 1),
        "queues_without_consumers": sorted(missing),
    }


def _restart_postgres(
    postgres: PrivatePostgres, gateway: str, down_s: float, started: float
) -> dict[str, Any]:
    at = time.monotonic()
    postgres.restart(down_s)
    up = time.monotonic()
    ready_s: float | None = None
    with httpx.Client(timeout=5, trust_env=False) as client:
        while time.monotonic() < up + 120:
            try:
                if client.get(f"{gateway}/readyz").status_code == 200:
                    ready_s = round(time.monotonic() - up, 1)
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
    return {
        "fault": "postgres restart",
        "at_s": round(at - started, 1),
        "unavailable_s": round(up - at, 1),
        "gateway_ready_s": ready_s,
    }


def _faults(
    config: RestartSoak,
    servers: tuple[PrivateRabbitMQ, PrivatePostgres],
    stack: Stack,
    body: bytes,
    log: FaultLog,
) -> None:
    """The faults in order, spread over the load's first 70 %: each starts once the previous one has
    recovered (runs in a thread: the servers' tools block). Then how long until the stack answers
    again; the load goes on ``LoadWindow.tail_s`` past that."""
    rabbit, postgres = servers
    started = time.monotonic()
    try:
        consumed = set[str]()
        while not consumed and time.monotonic() < started + 120:  # (rabbitmqctl may time out)
            consumed = _consumed_or_none(rabbit)
        slots = [0.15 + 0.55 * index / len(config.faults) for index in range(len(config.faults))]
        for fault, slot in zip(config.faults, slots, strict=True):
            time.sleep(max(0.0, started + slot * config.duration_s - time.monotonic()))
            if fault == "rabbitmq":
                log.events.append(_restart_rabbitmq(rabbit, consumed, config.down_s, started))
            else:
                log.events.append(_restart_postgres(postgres, stack.url, config.down_s, started))
        log.recovered_s = _recovered(stack.url, stack.token, body)
    finally:
        log.over_at = time.monotonic()


def _recovered(gateway: str, token: str, compare: bytes, within_s: float = 90) -> float | None:
    """Seconds after the last fault until a compare answers 200 and a session is created (201) again;
    None if not within ``within_s``."""
    start = time.monotonic()
    headers = {"Authorization": f"Bearer {token}", "content-type": "application/json"}
    with httpx.Client(base_url=gateway, headers=headers, timeout=30, trust_env=False) as client:
        while time.monotonic() < start + within_s:
            try:
                compared = client.post("/v1/compare", content=compare).status_code
                created = client.post("/v1/sessions", json={}).status_code
            except httpx.HTTPError:
                compared = created = 0
            if (compared, created) == (200, 201):
                return round(time.monotonic() - start, 1)
            time.sleep(1)
    return None


# --------------------------------------------------------------------------- the events


async def bind_finished(url: str, queue_name: str = FINISHED_QUEUE) -> None:
    """A durable quorum queue bound to SessionFinished: it keeps every one through broker restarts."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        events = await channel.get_exchange(EVENTS_EXCHANGE, ensure=True)
        queue = await channel.declare_queue(queue_name, durable=True, arguments={"x-queue-type": "quorum"})
        await queue.bind(events, routing_key="session.finished")


async def drain_finished(url: str, queue_name: str = FINISHED_QUEUE, *, delete: bool = False) -> Counter[str]:
    """SessionFinished events per session id, drained from :func:`bind_finished`'s queue."""
    counts: Counter[str] = Counter()
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(queue_name)
        while (message := await queue.get(fail=False, no_ack=True)) is not None:
            counts[str(json.loads(message.body).get("session_id"))] += 1
        if delete:
            await queue.delete(if_unused=False, if_empty=False)
    return counts


# --------------------------------------------------------------------------- the run


@dataclass
class Tallies:
    compares: CompareTally = field(default_factory=CompareTally)
    sessions: SessionTally = field(default_factory=SessionTally)
    calls: CallTally = field(default_factory=CallTally)
    faults: FaultLog = field(default_factory=FaultLog)


async def _load(
    stack: Stack,
    config: RestartSoak,
    servers: tuple[PrivateRabbitMQ, PrivatePostgres],
    receiver: CallbackReceiver,
    tallies: Tallies,
) -> None:
    soak = SoakBench(
        pairs=config.pairs,
        models_dir=config.models_dir,
        pack=config.pack,
        broker_url=servers[0].url,
        duration_s=config.duration_s,
        rate_per_s=config.rate_per_s,
        sessions=config.sessions,
        request_timeout_s=config.compare_timeout_s + 15,
        session_timeout_s=120,
    )
    bodies = [compare_body(a.read_bytes(), b.read_bytes()) for a, b in config.pairs]
    headers = {"Authorization": f"Bearer {stack.token}", "content-type": "application/json"}
    window = LoadWindow(time.monotonic() + config.duration_s, tallies.faults)
    async with httpx.AsyncClient(
        base_url=stack.url, headers=headers, timeout=soak.request_timeout_s, trust_env=False
    ) as client:
        warm = await client.post(
            "/v1/compare", content=bodies[0], headers={"content-type": "application/json"}
        )
        if warm.status_code != 200:
            raise BenchError(f"warm-up compare answered {warm.status_code}: {warm.text[:300]}")
        work = [
            _compares(client, bodies, soak, tallies.compares, window.done),
            _call_flows(client, receiver, tallies.calls, config.call_every_s, window.done),
            asyncio.to_thread(_faults, config, servers, stack, bodies[0], tallies.faults),
        ]
        if config.sessions:
            work.append(_session_loops(stack.url, stack.token, soak, tallies.sessions, window.done))
        # every loop ends by itself once the window closes (the faults failing close it too): a task
        # cancelled mid-WebRTC could swallow its cancellation and keep asyncio.run from returning
        results = await asyncio.gather(*work, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result


def _wait_callbacks(receiver: CallbackReceiver, tokens: list[str], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while any(receiver.received[token] == 0 for token in tokens) and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(_SETTLE_S)  # a duplicate would arrive now


def _quiet_queues(rabbit: PrivateRabbitMQ, timeout_s: float = 180) -> dict[str, QueueState]:
    """Every queue of the node once nothing is ready or unacknowledged any more (or at the timeout)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            states = {name: state for name, state in rabbit.queues().items() if name != FINISHED_QUEUE}
        except BenchError:  # rabbitmqctl too slow this time: again, until the deadline
            if time.monotonic() > deadline:
                raise
            continue
        busy = [state for state in states.values() if state.ready or state.unacked]
        if not busy or time.monotonic() > deadline:
            return states
        time.sleep(1)


def _problems(
    config: RestartSoak,
    tallies: Tallies,
    receiver: CallbackReceiver,
    finished: Counter[str],
    queues: dict[str, QueueState],
) -> list[str]:
    problems = []
    compares = tallies.compares
    if compares.sent != compares.answered:
        problems.append(
            f"{compares.sent - compares.answered} compares got no answer ({dict(compares.errors)})"
        )
    if compares.undocumented:
        problems.append(
            f"compares answered other than 200 or 503/504 problem+json: {dict(compares.undocumented)}"
        )
    if compares.slowest_s > config.compare_timeout_s + 5:
        problems.append(
            f"a compare took {compares.slowest_s:.1f} s (deadline {config.compare_timeout_s:g} s)"
        )
    refused = {status: n for status, n in tallies.calls.refused.items() if status not in DOCUMENTED}
    if refused:
        problems.append(f"call flow starts answered other than 202 or 503/504: {refused}")
    creates = {key: n for key, n in tallies.sessions.errors.items() if key.startswith("create ")}
    if any(key.removeprefix("create ") not in DOCUMENTED for key in creates):
        problems.append(f"session creations answered other than 201 or 503/504: {creates}")
    unfinished = tallies.sessions.statuses.get("UNFINISHED", 0)
    if unfinished:
        problems.append(f"{unfinished} sessions never reached a terminal status")
    wrong = {sid: finished[sid] for sid in tallies.sessions.ids if finished[sid] != 1}
    if wrong:
        problems.append(f"sessions without exactly one SessionFinished: {wrong}")
    calls = {
        token: receiver.received[token] for token in tallies.calls.accepted if receiver.received[token] != 1
    }
    if calls:
        problems.append(f"call flows without exactly one callback: {calls}")
    for name, state in sorted(queues.items()):
        if state.ready or state.unacked:
            problems.append(f"{name}: {state.ready} ready, {state.unacked} unacknowledged after the load")
    for event in tallies.faults.events:
        if event.get("queues_without_consumers"):
            problems.append(
                f"no consumers back on {event['queues_without_consumers']} after the broker restart"
            )
        if event.get("fault") == "postgres restart" and event.get("gateway_ready_s") is None:
            problems.append("the gateway was not ready again after the database restart")
    if tallies.faults.recovered_s is None:
        problems.append("no compare answered 200 with a session created 201 within 90 s of the last fault")
    if len(tallies.faults.events) != len(config.faults):
        problems.append(f"faults run: {len(tallies.faults.events)} of {len(config.faults)}")
    return problems


def _report(
    config: RestartSoak,
    tallies: Tallies,
    receiver: CallbackReceiver,
    finished: Counter[str],
    queues: dict[str, QueueState],
) -> dict[str, Any]:
    ids = tallies.sessions.ids
    return {
        "faults": tallies.faults.events,
        "recovered_after_last_fault_s": tallies.faults.recovered_s,
        "compares": tallies.compares.report(config.duration_s),
        "liveness_sessions": {
            **tallies.sessions.report(),
            "created": len(ids),
            "session_finished_events": dict(sorted(Counter(str(finished[sid]) for sid in ids).items())),
        },
        "call_flows": tallies.calls.report(receiver),
        "queues_after": {
            name: {"ready": s.ready, "unacked": s.unacked, "consumers": s.consumers}
            for name, s in sorted(queues.items())
        },
        "dead_lettered": sum(s.ready + s.unacked for name, s in queues.items() if name.endswith(".dlq")),
        "problems": _problems(config, tallies, receiver, finished, queues),
    }


def run_restart_soak(config: RestartSoak, warn: Warn) -> dict[str, Any]:
    unknown = set(config.faults) - set(FAULTS)
    if unknown or not config.faults:
        raise BenchError(f"--restart takes {' and '.join(FAULTS)}, not {sorted(unknown) or 'nothing'}")
    if config.duration_s < 30:
        raise BenchError("--duration must be at least 30 s with --restart (a broker restart takes ~15 s)")
    header = {
        "duration_s": config.duration_s,
        "rate_per_s": config.rate_per_s,
        "sessions": config.sessions,
        "call_every_s": config.call_every_s,
        "down_s": config.down_s,
        "pack": config.pack,
        "machine": machine_info(),
    }
    tallies = Tallies()
    receiver = CallbackReceiver()
    with (
        terminate_on_sigterm(),
        PrivateRabbitMQ() as rabbit,
        PrivatePostgres() as postgres,
        receiver.serving(),
    ):
        stack_config = StackConfig(
            workers=1,
            models_dir=config.models_dir,
            broker_url=rabbit.url,
            pack=config.pack,
            database_url=postgres.url,
            own_vhost=False,
            other_workers=("call-agent", "liveness", "notifier"),
            ready_timeout_s=300,  # five processes loading models at once; minutes on a busy machine
            # rate limits on, as deployed: the gateway admits each caller (key, rate limit, quota)
            # in Postgres before any route, so the database restart reaches that path too
            extra_env={
                "FACEPROOF_FETCH_ALLOW_HOSTS": "127.0.0.1",
                "FACEPROOF_COMPARE_TIMEOUT_S": str(config.compare_timeout_s),
                "FACEPROOF_SESSION_TTL_S": "60",
                "FACEPROOF_FLOW_TIMEOUT_S": "60",
                "FACEPROOF_PROTOO_REQUEST_TIMEOUT_S": "3",
            },
        )
        with running_stack(stack_config, warn) as stack:
            try:
                _wait_consumers(rabbit, stack)
                asyncio.run(bind_finished(rabbit.url))
                asyncio.run(_load(stack, config, (rabbit, postgres), receiver, tallies))
                _wait_callbacks(receiver, tallies.calls.accepted, config.drain_timeout_s)
                queues = _quiet_queues(rabbit)
                finished = asyncio.run(drain_finished(rabbit.url))
                stack.check_alive()
            finally:
                if config.logs_dir is not None:
                    _keep_logs(config.logs_dir, stack.logs, (rabbit.log_path, postgres.log_path))
    return {
        **header,
        **_report(config, tallies, receiver, finished, queues),
        "load_average_after": machine_info()["load_average"],
    }


def _keep_logs(target: Path, logs: Path, servers: tuple[Path, ...]) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for path in [*logs.glob("*.log"), *servers]:
        if path.is_file():
            shutil.copyfile(path, target / (path.name if path.parent == logs else f"{path.parent.name}.log"))


def _wait_consumers(rabbit: PrivateRabbitMQ, stack: Stack, timeout_s: float = 180) -> None:
    """Until each worker's queues are consumed (the workers loaded their models and subscribed)."""
    wanted = {
        "matcher.compare-faces",
        "liveness.frames",
        "call-agent.start-session",
        "notifier.deliver-callback",
    }
    deadline = time.monotonic() + timeout_s
    while not wanted <= _consumed_or_none(rabbit):
        stack.check_alive()
        if time.monotonic() > deadline:
            raise BenchError(
                f"the workers did not subscribe within {timeout_s:g} s; logs:\n{stack.log_tail()}"
            )
        time.sleep(1)
