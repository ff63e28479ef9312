"""RFC 9457 problem+json errors: every failure the gateway answers has this shape."""

from __future__ import annotations

import itertools
import logging
from typing import Any, Final

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from contracts.http import Problem
from infra.db.errors import DatabaseUnavailable
from services.intake import errors as intake

MEDIA_TYPE = "application/problem+json"
log = logging.getLogger("faceproof.gateway")


class ProblemError(Exception):
    """An error answered to the caller as problem+json."""

    def __init__(
        self, status: int, title: str, detail: str, *, code: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.problem = Problem(title=title, status=status, detail=detail, code=code)
        self.headers = headers


#: The status of each class of intake error (services/intake/errors.py), the one place they meet HTTP.
INTAKE_STATUS: dict[type[intake.IntakeError], int] = {
    intake.InvalidInput: 400,
    intake.TooLarge: 413,
    intake.Refused: 422,
    intake.LockedOut: 429,
    intake.Unavailable: 503,
}


def intake_problem(error: intake.IntakeError) -> ProblemError:
    """The problem+json answer to an intake error: its class's status, its code, title and detail,
    ``Retry-After`` when it says when to retry."""
    status = next((INTAKE_STATUS[kind] for kind in type(error).__mro__ if kind in INTAKE_STATUS), 400)
    headers = None if error.retry_after_s is None else {"Retry-After": str(error.retry_after_s)}
    return ProblemError(status, error.title, error.detail, code=error.code, headers=headers)


def problem_response(problem: Problem, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(
        problem.model_dump(exclude_none=True),
        status_code=problem.status,
        media_type=MEDIA_TYPE,
        headers=headers,
    )


#: The most validation errors one 422 lists: a body of many bad items gets the first ones, not an
#: answer as large as the body.
MAX_REPORTED_ERRORS: Final = 20


def _validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    # Never echo the input back: it may be an image or a token.
    return [
        {"loc": list(error.get("loc", ())), "msg": error.get("msg", ""), "type": error.get("type", "")}
        for error in itertools.islice(exc.errors(), MAX_REPORTED_ERRORS)
    ]


async def _on_problem(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ProblemError)
    return problem_response(exc.problem, exc.headers)


async def _on_intake(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, intake.IntakeError)
    problem = intake_problem(exc)
    return problem_response(problem.problem, problem.headers)


async def _on_validation(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = _validation_errors(exc)
    if any(error["type"] == "json_invalid" for error in errors):
        problem = Problem(
            title="Malformed JSON",
            status=400,
            detail="The request body is not valid JSON.",
            code="MALFORMED_JSON",
        )
    else:
        problem = Problem(
            title="Invalid request",
            status=422,
            detail="The request does not match the schema.",
            code="INVALID_REQUEST",
            errors=errors,
        )
    return problem_response(problem)


async def _on_http(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    title = {404: "Not found", 405: "Method not allowed"}.get(exc.status_code, "HTTP error")
    problem = Problem(
        title=title, status=exc.status_code, detail=str(exc.detail), code=f"HTTP_{exc.status_code}"
    )
    return problem_response(problem, dict(exc.headers) if exc.headers else None)


#: Seconds a client waits before retrying a request the database could not serve (a restart takes a few).
DATABASE_RETRY_AFTER_S = 5


def database_unavailable(method: str, path: str, exc: Exception) -> JSONResponse:
    """Postgres unreachable, restarting or full, on any route or in the request guard (the key and
    the rate limit are read there): 503, retryable (no 500)."""
    log.warning("database unavailable on %s %s: %s", method, path, type(exc).__name__)
    problem = Problem(
        title="Service unavailable",
        status=503,
        detail="The database cannot be reached; retry later.",
        code="DATABASE_UNAVAILABLE",
    )
    return problem_response(problem, {"Retry-After": str(DATABASE_RETRY_AFTER_S)})


async def _on_database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    return database_unavailable(request.method, request.url.path, exc)


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    problem = Problem(
        title="Internal error", status=500, detail="An unexpected error occurred.", code="INTERNAL"
    )
    return problem_response(problem)


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ProblemError, _on_problem)
    app.add_exception_handler(intake.IntakeError, _on_intake)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(StarletteHTTPException, _on_http)
    app.add_exception_handler(DatabaseUnavailable, _on_database_unavailable)
    app.add_exception_handler(Exception, _on_unexpected)
