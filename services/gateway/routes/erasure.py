"""DELETE /v1/sessions/{id}: erase a session's biometric data now (docs/security.md, "Retention").

The owner only (another client's session answers 404, as GET does). The session's tombstone is
set first (``infra.erasure``): from then on no writer stores anything for it (the call agent stops
storing frames and hangs up, the liveness worker writes no images), and should the purge below
fail, the reconciler (``infra.reconcile``) retries it. An unfinished session is then ended
(FAILED, reason ERASED, one SessionFinished), so no worker goes on with it. The status and
decision stay readable; GET then answers ``purged: true`` and no image URLs.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from contracts.http import Problem
from domain.sessions import Erased
from infra.lifecycle import SessionLifecycle
from infra.storage.errors import StorageError
from services.gateway.dependencies import PrincipalDep, Resources, ResourcesDep
from services.gateway.problems import ProblemError

router = APIRouter(tags=["sessions"])
log = logging.getLogger("faceproof.gateway")

ERASE_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem},
    404: {"model": Problem, "description": "SESSION_NOT_FOUND (or another client's session)"},
    503: {
        "model": Problem,
        "description": "STORAGE_UNAVAILABLE: the erasure is recorded (nothing more is stored) and is "
        "retried in the background; repeat the DELETE to confirm it finished",
    },
}


async def _end_unfinished(session_id: str, res: Resources) -> None:
    """End an unfinished session FAILED, reason ERASED (``infra.lifecycle``: one SessionFinished,
    one SESSION_DECIDED record, the lockout rule); nothing when it had ended already."""
    await SessionLifecycle(res.sessions).end(session_id, Erased())


@router.delete(
    "/v1/sessions/{session_id}",
    status_code=204,
    response_class=Response,
    responses=ERASE_ERRORS,
    summary="Erase a session's frames, images and embeddings now (status and decision stay)",
)
async def erase_session(session_id: str, principal: PrincipalDep, res: ResourcesDep) -> Response:
    record = await res.sessions.get(principal.owner, session_id)
    if record is None:
        raise ProblemError(404, "Not found", f"There is no session '{session_id}'.", code="SESSION_NOT_FOUND")
    await res.sessions.request_erasure(session_id)
    await _end_unfinished(session_id, res)
    try:
        await res.eraser.erase(session_id, actor=principal.owner)
    except StorageError:
        raise ProblemError(
            503,
            "Service unavailable",
            "The object store cannot be reached. The erasure is recorded: nothing more is stored for "
            "the session and its data is purged when the store is back. Repeat to confirm.",
            code="STORAGE_UNAVAILABLE",
            headers={"Retry-After": "5"},
        ) from None
    return Response(status_code=204)
