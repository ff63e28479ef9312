"""Creating a liveness session and starting a video-call flow: shared by the HTTP routes and the
public broker ingress, so both doors check the same things the same way and fail with the same
problem codes (:class:`ProblemError`; the ingress turns its ``code`` into a rejection reason)."""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

from aio_pika.exceptions import AMQPError
from faststream.rabbit import RabbitBroker

from contracts.commands import JoinCall
from contracts.http import CallCreatedResponse, CallSettings, CreateSessionRequest, JoinCallRequest
from contracts.routing import CommandKey
from contracts.values import SessionStatus
from infra.broker import COMMANDS
from infra.db.errors import DatabaseError
from infra.db.flows import CallFlowRepository
from infra.db.repositories import SessionRecord, SessionRepository
from infra.db.security import LivenessFailures
from infra.safe_fetch import (
    WEBSOCKET_SCHEMES,
    FetchFailed,
    FetchPolicy,
    NotAnImage,
    TooLarge,
    UrlRefused,
    check_image,
    fetch_image,
    precheck_url,
)
from infra.settings import Settings
from infra.storage.base import ObjectStore
from infra.storage.errors import StorageError
from infra.telemetry.metrics import session_status
from services.call_agent.catalog import normalise_language
from services.gateway.auth import Principal
from services.gateway.client_tokens import new_client_token
from services.gateway.images import read_image_field
from services.gateway.lockout import refuse_if_locked
from services.gateway.problems import ProblemError

__all__ = [
    "CallStarter",
    "SessionCreator",
    "choose_language",
    "client_url",
    "reference_bytes",
]

log = logging.getLogger("faceproof.gateway")

_CONTENT_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
_URL_SCHEME = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*):")

#: The instruction catalogs of the call agent: one ``{lang}.json`` per language.
#: The flow outlives its session by this much, so the session's own end is what usually ends it.
FLOW_MARGIN_S = 60


def _unavailable(what: str, code: str) -> ProblemError:
    return ProblemError(
        503, "Service unavailable", f"The {what} cannot be reached.", code=code, headers={"Retry-After": "5"}
    )


# --------------------------------------------------------------------------- sessions


async def reference_bytes(value: str, settings: Settings) -> tuple[bytes, str]:
    """The reference image (from base64, a data URL or an http(s) URL) and its content type."""
    scheme = _URL_SCHEME.match(value)
    if scheme and scheme.group("scheme").lower() != "data":
        try:
            data = await fetch_image(value.strip(), policy=FetchPolicy.from_settings(settings))
        except UrlRefused as error:
            raise ProblemError(
                422,
                "Reference URL refused",
                f"The reference URL is refused: {error.reason}.",
                code="REFERENCE_URL_REFUSED",
            ) from None
        except TooLarge as error:
            raise ProblemError(
                413, "Image too large", f"The reference: {error}.", code="IMAGE_TOO_LARGE"
            ) from None
        except NotAnImage:
            raise ProblemError(
                422,
                "Invalid image",
                "The reference URL does not serve a JPEG, PNG or WebP image.",
                code="REFERENCE_NOT_AN_IMAGE",
            ) from None
        except FetchFailed as error:
            raise ProblemError(
                422,
                "Reference unreachable",
                f"The reference URL could not be fetched: {error}.",
                code="REFERENCE_FETCH_FAILED",
            ) from None
    else:
        data = await read_image_field(
            value, field="reference", max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels
        )
    fmt = await asyncio.to_thread(check_image, data, max_pixels=settings.max_image_pixels)  # off the loop
    return data, _CONTENT_TYPES[fmt]


def client_url(base_url: str, session_id: str, token: str) -> str:
    """The hosted page of a session, the client token in the fragment (never in server logs)."""
    return f"{base_url.rstrip('/')}/v1/sessions/{session_id}/client#token={token}"


@dataclass(frozen=True)
class SessionCreator:
    settings: Settings
    sessions: SessionRepository
    store: ObjectStore
    #: The lockout's memory (``None``: no lockout, as in tests without a database of failures).
    failures: LivenessFailures | None

    async def create(self, body: CreateSessionRequest, principal: Principal) -> tuple[SessionRecord, str]:
        """Create (or, for a repeated clientRequestToken, find) the session; returns it and a new
        client token (a replay replaces the previous token). A locked-out subject or device is
        refused here (429 ``SUBJECT_LOCKED_OUT``), whichever door the request came in by."""
        await refuse_if_locked(
            self.failures, self.settings, principal.owner, body.settings.model_dump(mode="json")
        )
        reference = await reference_bytes(body.reference, self.settings) if body.reference else None
        session_id = str(uuid4())
        token, token_hash = new_client_token()
        reference_key = None
        if reference is not None:
            reference_key = f"sessions/{session_id}/reference-input.jpg"
            try:
                await self.store.put(reference_key, reference[0], reference[1])
            except StorageError:
                raise _unavailable("object store", "STORAGE_UNAVAILABLE") from None
        ttl = body.settings.expires_in_s or self.settings.session_ttl_s
        try:
            record, created = await self.sessions.create(
                principal.owner,
                client_request_token=body.client_request_token,
                settings=body.settings.model_dump(mode="json"),
                expires_at=datetime.now(UTC) + timedelta(seconds=ttl),
                reference_key=reference_key,
                client_token_hash=token_hash,
                session_id=session_id,
            )
        except DatabaseError:
            # No row will ever own the reference: remove it now (the reconciler removes it
            # later should this delete fail too: an object without a row, past the grace period).
            if reference_key is not None:
                await self._discard(reference_key)
            raise
        if created:
            session_status(SessionStatus.CREATED)
        else:  # an idempotent replay: the first call's session (and reference) stand
            if reference_key is not None:
                await self._discard(reference_key)
            await self.sessions.set_client_token_hash(record.id, token_hash)
        return record, token

    async def _discard(self, reference_key: str) -> None:
        try:
            await self.store.delete(reference_key)
        except StorageError:
            log.warning("could not delete an unused reference (the reconciler will)")


# --------------------------------------------------------------------------- video-call flows


def choose_language(requested: str) -> tuple[str, bool]:
    """The instruction catalog's language for ``requested`` ("es", "es-MX", "PT_br" ...) and
    whether it fell back to English (the call agent's own catalogs decide)."""
    chosen = normalise_language(requested)
    return chosen, chosen != requested.strip().replace("_", "-").split("-", 1)[0].lower()


def _check_room_url(ws_url: str, settings: Settings) -> None:
    """Refuse at once a room the call agent would refuse (the safe fetcher's address policy, the part
    that needs no DNS: a literal private address, credentials). The call agent checks again, with
    DNS, when it opens the socket (ROOM_REFUSED)."""
    try:
        precheck_url(ws_url, FetchPolicy.from_settings(settings), schemes=WEBSOCKET_SCHEMES)
    except UrlRefused as error:
        raise ProblemError(
            422, "Room refused", f"The room URL (ws_url) is refused: {error.reason}.", code="ROOM_REFUSED"
        ) from None


@dataclass(frozen=True)
class CallStarter:
    settings: Settings
    sessions: SessionRepository
    flows: CallFlowRepository
    broker: RabbitBroker

    async def start(
        self,
        body: JoinCallRequest,
        call_settings: CallSettings,
        principal: Principal,
        *,
        flow_id: str | None = None,
    ) -> CallCreatedResponse:
        """Create the call's session and flow rows, then publish JoinCall for a call agent."""
        settings = self.settings
        _check_room_url(body.ws_url, settings)
        language, fallback = choose_language(body.lang)
        now = datetime.now(UTC)
        session_ttl = call_settings.session_timeout_s or settings.session_ttl_s
        flow_ttl = max(call_settings.timeout_s or settings.flow_timeout_s, session_ttl + FLOW_MARGIN_S)
        session_settings: dict[str, Any] = {
            "challenges": call_settings.challenges,
            "challengeTypes": None
            if call_settings.challenge_types is None
            else [t.value for t in call_settings.challenge_types],
            "auditImages": 2,
            "language": language,
            "expiresInS": session_ttl,
        }
        session, _ = await self.sessions.create(
            principal.owner,
            client_request_token=None,
            settings=session_settings,
            expires_at=now + timedelta(seconds=session_ttl),
            kind="call",
        )
        session_status(SessionStatus.CREATED)
        flow = await self.flows.create(
            principal.owner,
            session_id=session.id,
            ws_url=body.ws_url,
            callback_base_url=str(body.callback_base_url),
            datastore_base_url=None if body.datastore_base_url is None else str(body.datastore_base_url),
            token=body.token,
            language=language,
            settings={**session_settings, "timeoutS": flow_ttl},
            callback_secret=call_settings.callback_secret,
            deadline=now + timedelta(seconds=flow_ttl),
            flow_id=flow_id or str(uuid4()),
        )
        command = JoinCall(
            correlation_id=flow.id,
            client_id=principal.client_id,
            flow_id=flow.id,
            session_id=session.id,
            ws_url=body.ws_url,
            callback_base_url=body.callback_base_url,
            datastore_base_url=body.datastore_base_url,
            token=body.token,
            language=language,
            expires_at=session.expires_at,
            settings=session_settings,
        )
        try:
            await self.broker.publish(
                command,
                exchange=COMMANDS,
                routing_key=CommandKey.JOIN_CALL,
                correlation_id=flow.id,
                message_id=command.message_id,
                persist=True,
            )
        except (AMQPError, ConnectionError):
            # The flow row stays: its deadline ends it with a failure callback, as for any lost call.
            raise _unavailable("message broker", "BROKER_UNAVAILABLE") from None
        log.info("flow %s started (session %s, language %s)", flow.id, session.id, language)
        return CallCreatedResponse(
            flow_id=flow.id,
            session_id=session.id,
            status=flow.status.value,
            language=language,
            requested_language=body.lang,
            language_fallback=fallback,
            deadline=flow.deadline,
        )
