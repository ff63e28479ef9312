"""Creating a liveness session: one use case for the HTTP routes and the broker ingress, so both
doors check the same things (lockout, reference image) the same way and refuse with the same
codes (:mod:`services.intake.errors`)."""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import uuid4

from contracts.documents import SessionSettingsDocument
from contracts.http import CreateSessionRequest
from contracts.values import SessionStatus
from domain.ports import FailureHistory, FetchReference, ReferenceStore, SessionRows
from domain.records import SessionRecord
from infra.db.errors import DatabaseError
from infra.safe_fetch import (
    FetchFailed,
    FetchPolicy,
    NotAnImage,
    TooLarge,
    UrlRefused,
    check_image,
    fetch_image,
)
from infra.settings import Settings
from infra.storage.errors import StorageError
from infra.telemetry.metrics import session_status
from services.intake import errors
from services.intake.caller import Caller
from services.intake.client_tokens import new_client_token
from services.intake.images import read_image_field
from services.intake.lockout import refuse_if_locked

__all__ = ["SessionCreator", "client_url", "reference_bytes", "safe_fetcher"]

log = logging.getLogger("faceproof.intake")

_CONTENT_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
_URL_SCHEME = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*):")


def safe_fetcher(settings: Settings) -> FetchReference:
    """Reference URLs fetched through the safe fetcher's address policy (``infra.safe_fetch``)."""
    policy = FetchPolicy.from_settings(settings)

    async def fetch(url: str) -> bytes:
        return await fetch_image(url, policy=policy)

    return fetch


async def _fetched(url: str, fetch: FetchReference) -> bytes:
    try:
        return await fetch(url)
    except UrlRefused as error:
        detail = f"The reference URL is refused: {error.reason}."
        raise errors.Refused("REFERENCE_URL_REFUSED", "Reference URL refused", detail) from None
    except TooLarge as error:
        raise errors.TooLarge("IMAGE_TOO_LARGE", "Image too large", f"The reference: {error}.") from None
    except NotAnImage:
        detail = "The reference URL does not serve a JPEG, PNG or WebP image."
        raise errors.Refused("REFERENCE_NOT_AN_IMAGE", "Invalid image", detail) from None
    except FetchFailed as error:
        detail = f"The reference URL could not be fetched: {error}."
        raise errors.Refused("REFERENCE_FETCH_FAILED", "Reference unreachable", detail) from None


async def reference_bytes(
    value: str, settings: Settings, fetch: FetchReference | None = None
) -> tuple[bytes, str]:
    """The reference image (from base64, a data URL or an http(s) URL) and its content type."""
    scheme = _URL_SCHEME.match(value)
    if scheme and scheme.group("scheme").lower() != "data":
        data = await _fetched(value.strip(), fetch or safe_fetcher(settings))
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
    sessions: SessionRows
    store: ReferenceStore
    #: The lockout's memory (``None``: no lockout, as in tests without a database of failures).
    failures: FailureHistory | None
    #: Fetches reference URLs (``None``: :func:`safe_fetcher` of the settings).
    fetch: FetchReference | None = None

    async def create(
        self, body: CreateSessionRequest, caller: Caller, *, reissue: bool = True
    ) -> tuple[SessionRecord, str]:
        """Create (or, for a repeated clientRequestToken, find) the session; returns it and a new
        client token (a replay replaces the previous token; with ``reissue=False``, for a caller
        that does not pass the token on, it leaves the issued one working and returns ""). A
        locked-out subject or device is refused here (:class:`~services.intake.errors.LockedOut`),
        whichever door the request came in by."""
        stored = SessionSettingsDocument.model_validate(body.settings.model_dump())
        await refuse_if_locked(self.failures, self.settings, caller.owner, stored)
        reference = (
            await reference_bytes(body.reference, self.settings, self.fetch) if body.reference else None
        )
        session_id = str(uuid4())
        token, token_hash = new_client_token()
        reference_key = None
        if reference is not None:
            reference_key = f"sessions/{session_id}/reference-input.jpg"
            await self._store(reference_key, *reference)
        ttl = body.settings.expires_in_s or self.settings.session_ttl_s
        try:
            record, created = await self.sessions.create(
                caller.owner,
                client_request_token=body.client_request_token,
                settings=stored,
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
            if not reissue:
                return record, ""
            await self.sessions.set_client_token_hash(record.id, token_hash)
        return record, token

    async def _store(self, key: str, data: bytes, content_type: str) -> None:
        try:
            await self.store.put(key, data, content_type)
        except StorageError:
            detail = "The object store cannot be reached."
            raise errors.Unavailable(
                "STORAGE_UNAVAILABLE", "Service unavailable", detail, retry_after_s=errors.RETRY_AFTER_S
            ) from None

    async def _discard(self, reference_key: str) -> None:
        try:
            await self.store.delete(reference_key)
        except StorageError:
            log.warning("could not delete an unused reference (the reconciler will)")
