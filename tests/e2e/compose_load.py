"""The load that the compose stack's faults run under (tests/e2e/test_compose_stack_e2e.py): hosted
liveness sessions (a scripted subject over real WebRTC, aiortc) one after another, and video-call
flows one after another through a real mediasoup room (a scripted subject as a pymediasoup peer; the
example controller serving the reference and counting callbacks), each loop until told to stop.
Compares stream beside them (the test's CompareStream). What each session and flow was, when it
ran and how it ended is kept, so each fault can be held to what overlapped it.

The subject's side is the user's: an error there (the offer refused while the call agent is down,
ICE failing when it is killed) is counted by its type, not raised; the guarantees are checked on
the server's side (terminal statuses, SessionFinished events, callbacks)."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx

from examples.controller import Controller
from faceproof.testing.mediasoup_room import MediasoupRoom, RoomSubject
from faceproof.testing.scripted_subject import Media
from faceproof.testing.webrtc_subject import SourceTrack, run_subject
from services.liveness.analysis import FrameAnalyzer
from tests.e2e.conftest import (
    ANSWERABLE,
    LOOPBACK,
    SECRET,
    TOKEN,
    Stack,
    agent_in_the_room,
    follow_instructions,
    scripted,
)

__all__ = ["FINISHED_QUEUE", "TERMINAL", "Load", "Span"]

T = TypeVar("T")
TERMINAL = frozenset({"SUCCEEDED", "FAILED", "EXPIRED"})
#: A session nobody finishes expires after this (the API's expiresInS); its subject waits a little longer.
SESSION_EXPIRES_S = 60
#: A flow's deadline (timeoutS), then its failure callback; its liveness session's (sessionTimeoutS).
FLOW_TIMEOUT_S = 90
FLOW_SESSION_S = 60
#: How long after its deadline a flow's one callback may still take (the notifier's retries).
CALLBACK_GRACE_S = 45
#: A subject whose session failed on its side (the offer refused while the broker is down) tries a
#: new session after this, as the gateway's Retry-After asks.
RETRY_AFTER_S = 5
#: A durable quorum queue of the test's own on ``session.finished``: it survives the broker's restart.
FINISHED_QUEUE = "e2e.compose-session-finished"


@dataclass
class Span:
    """When a session or flow ran (time.monotonic); ``ended`` None while it runs."""

    started: float
    ended: float | None = None

    def overlaps(self, begin: float, end: float) -> bool:
        return self.started <= end and (self.ended is None or self.ended >= begin)


@dataclass
class Load:
    stack: Stack
    controller: Controller
    media: Media
    analyzer: FrameAnalyzer
    stop: threading.Event = field(default_factory=threading.Event)
    #: Each hosted session created (201), by id.
    sessions: dict[str, Span] = field(default_factory=dict)
    #: Each call flow accepted (202), by the controller's token.
    flows: dict[str, Span] = field(default_factory=dict)
    #: Starts the gateway did not accept: (time, "session"/"call", status or error class).
    refused: list[tuple[float, str, str]] = field(default_factory=list)
    #: The tokens of the call starts refused: a flow whose row was written before the refusal ends
    #: at its deadline with one failure callback (docs/reliability.md), never with two.
    refused_tokens: list[str] = field(default_factory=list)
    #: Errors on the subject's side, by kind and class.
    subject_errors: Counter[str] = field(default_factory=Counter)

    def running(self, at: float) -> tuple[int, int]:
        """Sessions and flows under way at ``at``."""
        return (
            sum(span.overlaps(at, at) for span in self.sessions.values()),
            sum(span.overlaps(at, at) for span in self.flows.values()),
        )

    def overlapping(self, begin: float, end: float) -> tuple[int, int]:
        return (
            sum(span.overlaps(begin, end) for span in self.sessions.values()),
            sum(span.overlaps(begin, end) for span in self.flows.values()),
        )

    def callbacks(self, token: str) -> int:
        return sum(callback.token == token for callback in list(self.controller.callbacks))

    async def run(self, faults: Callable[[], T]) -> T:
        """The loops while ``faults`` runs in a thread (it sets ``stop`` when it ends); each loop
        finishes the session or flow it is in, then ends."""
        async with MediasoupRoom() as room:
            results = await asyncio.gather(
                asyncio.to_thread(self._stopping_after, faults),
                self.session_loop(),
                self.flow_loop(room),
                return_exceptions=True,
            )
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return results[0]  # type: ignore[return-value]

    def _stopping_after(self, faults: Callable[[], T]) -> T:
        try:
            return faults()
        finally:
            self.stop.set()

    def _client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.stack.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30, trust_env=False
        )

    async def _post(self, client: httpx.AsyncClient, kind: str, path: str, body: dict[str, Any]) -> Any:
        """The resource the gateway created, or None (the refusal recorded, after a pause)."""
        try:
            response = await client.post(path, json=body)
            answer = str(response.status_code)
        except httpx.HTTPError as error:
            answer = type(error).__name__
        if answer in ("201", "202"):
            return response.json()
        self.refused.append((time.monotonic(), kind, answer))
        await asyncio.sleep(1)
        return None

    async def session_loop(self) -> None:
        settings = {"challenges": 2, "challengeTypes": ANSWERABLE, "auditImages": 1}
        async with self._client() as client:
            while not self.stop.is_set():
                body = {"settings": {**settings, "expiresInS": SESSION_EXPIRES_S}}
                created = await self._post(client, "session", "/v1/sessions", body)
                if created is None:
                    continue
                span = self.sessions[created["sessionId"]] = Span(time.monotonic())
                failed = False
                try:
                    await run_subject(
                        self.stack.url,
                        created["sessionId"],
                        created["clientToken"],
                        scripted(self.media, self.analyzer),
                        timeout_s=SESSION_EXPIRES_S + 15,
                    )
                except Exception as error:  # the user's side of a fault: counted (module docstring)
                    self.subject_errors[f"session {type(error).__name__}"] += 1
                    failed = True
                finally:
                    span.ended = time.monotonic()
                if failed:  # (an offer refused 503 comes back at once)
                    await asyncio.sleep(RETRY_AFTER_S)

    async def flow_loop(self, room: MediasoupRoom) -> None:
        async with self._client() as client:
            index = 0
            while not self.stop.is_set():
                index += 1
                await self.one_flow(client, room, f"load-{index}")

    async def one_flow(self, client: httpx.AsyncClient, room: MediasoupRoom, room_id: str) -> None:
        """One flow in ``room_id``: the subject walks in once the call agent produced its video and
        follows the instructions; until the controller's callback or the flow's deadline."""
        token = f"{room_id}-{secrets.token_hex(4)}"
        source = scripted(self.media, self.analyzer)
        session: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        bound = asyncio.Event()
        follower = asyncio.ensure_future(follow_instructions(self.stack, source, session, bound))
        subject = RoomSubject(SourceTrack(source), policy=LOOPBACK)
        arrival: asyncio.Future[None] | None = None

        async def walk_in() -> None:
            try:
                await agent_in_the_room(room, room_id)
                await subject.join(room.url(room_id, "subject"))
            except Exception as error:  # the agent never came (killed) or the join failed: counted
                self.subject_errors[f"flow {type(error).__name__}"] += 1

        try:
            listening = asyncio.ensure_future(bound.wait())
            await asyncio.wait({follower, listening}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
            listening.cancel()
            if not bound.is_set():  # the broker restarting: this subject gets no instructions
                self.subject_errors["flow instructions unheard"] += 1
            settings = {
                "challenges": 2,
                "challengeTypes": ANSWERABLE,
                "callbackSecret": SECRET,
                "sessionTimeoutS": FLOW_SESSION_S,
                "timeoutS": FLOW_TIMEOUT_S,
            }
            body = {
                "ws_url": room.url(room_id, "faceproof"),
                "callback_base_url": self.controller.url,
                "token": token,
                "lang": "en",
                "settings": settings,
            }
            flow = await self._post(client, "call", "/v1/calls", body)
            if flow is None:
                self.refused_tokens.append(token)
                return
            session.set_result(flow["sessionId"])
            span = self.flows[token] = Span(time.monotonic())
            arrival = asyncio.ensure_future(walk_in())
            deadline = span.started + FLOW_TIMEOUT_S + CALLBACK_GRACE_S
            while not self.callbacks(token) and time.monotonic() < deadline:  # noqa: ASYNC110 - a thread fills it
                await asyncio.sleep(0.5)
            span.ended = time.monotonic()
        finally:
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await follower
            if arrival is not None:
                arrival.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await arrival
            try:
                await subject.leave()
            except Exception as error:  # a subject that never joined
                self.subject_errors[f"flow leave {type(error).__name__}"] += 1
