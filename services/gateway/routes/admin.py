"""Operator routes (admin API keys, or the static token): every client's usage and limits."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query

from contracts.http import Problem
from services.gateway.auth import STATIC_OWNER
from services.gateway.dependencies import AdminDep, ResourcesDep
from services.gateway.problems import ProblemError
from services.gateway.ratelimit import static_limits

router = APIRouter(tags=["admin"])


@router.get(
    "/v1/admin/usage",
    responses={401: {"model": Problem}, 403: {"model": Problem}, 429: {"model": Problem}},
    summary="Requests this month and the limits of every API client (admin keys only)",
)
async def usage(
    _: AdminDep,
    res: ResourcesDep,
    client: Annotated[str | None, Query(max_length=100, description="One client, by name or id")] = None,
) -> dict[str, Any]:
    now = datetime.now(UTC)
    repository = res.rate_limits
    if repository is None:
        raise ProblemError(503, "Service unavailable", "Usage is not recorded here.", code="NO_USAGE")
    rows = [
        {
            "clientId": row.client_key,
            "name": row.name,
            "period": row.period,
            "requests": row.requests,
            "monthlyQuota": row.limits.monthly_quota,
            "ratePerSecond": row.limits.rate_per_second,
            "burst": row.limits.burst,
            "admin": row.admin,
            "revoked": row.revoked,
        }
        for row in await repository.usage(now, client)
    ]
    if res.settings.static_token and client in (None, STATIC_OWNER):
        limits = static_limits(res.settings)
        rows.append(
            {
                "clientId": STATIC_OWNER,
                "name": STATIC_OWNER,
                "period": now.strftime("%Y-%m"),
                "requests": await repository.requests(STATIC_OWNER, now),
                "monthlyQuota": limits.monthly_quota,
                "ratePerSecond": limits.rate_per_second,
                "burst": limits.burst,
                "admin": True,
                "revoked": False,
            }
        )
    return {"clients": rows}
