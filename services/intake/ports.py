"""The ports of the intake use cases that are theirs alone: the session and flow rows, JoinCall.
The reference store, the fetcher and the lockout's memory are ``domain.ports``'s.

Postgres (``infra.db``), S3 (``infra.storage``) and RabbitMQ
(:class:`services.intake.calls.BrokerCallCommands`) implement them in production;
``tests/unit/intake`` has an in-memory fake of each.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from contracts.commands import JoinCall
from contracts.documents import FlowSettingsDocument, SessionSettingsDocument
from infra.db.flows import CallFlowRecord
from infra.db.records import SessionRecord

__all__ = ["CallCommands", "FlowRows", "SessionRows"]


class SessionRows(Protocol):
    async def create(
        self,
        owner: str,
        *,
        client_request_token: str | None,
        settings: SessionSettingsDocument,
        expires_at: datetime,
        kind: str = "liveness",
        reference_key: str | None = None,
        client_token_hash: str | None = None,
        session_id: str | None = None,
    ) -> tuple[SessionRecord, bool]:
        """The new session and ``True``, or the owner's session of the same client request token
        and ``False``. Raises ``infra.db.errors.DatabaseError``."""
        ...

    async def set_client_token_hash(self, session_id: str, client_token_hash: str) -> bool: ...


class FlowRows(Protocol):
    async def create(
        self,
        owner: str,
        *,
        session_id: str,
        ws_url: str,
        callback_base_url: str,
        datastore_base_url: str | None,
        token: str,
        language: str,
        settings: FlowSettingsDocument,
        callback_secret: str | None,
        deadline: datetime,
        flow_id: str | None = None,
    ) -> CallFlowRecord: ...

    async def get(self, owner: str, flow_id: str) -> CallFlowRecord | None: ...


class CallCommands(Protocol):
    async def join(self, command: JoinCall) -> None:
        """Hand JoinCall to a call agent; raises ``services.intake.errors.Unavailable`` when the
        broker cannot be reached."""
        ...
