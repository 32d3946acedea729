"""Errors as HTTP answers: RFC 9457 problem details, mapped once and declared once in OpenAPI.

TSMError (app/errors.py) ─▶ application/problem+json with its status, title, detail, extras
validation error         ─▶ 422 naming the first few errors and counting the rest
unknown path / method    ─▶ 404 / 405 (+ Allow) problems
anything else            ─▶ a bare 500 problem, logged, never a trace
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from app.errors import MAX_REPORTED_ERRORS, PROBLEM_JSON, TSMError, error_for_status, validation_problem

logger = logging.getLogger("tsm.errors")


def problem(
    status: int,
    title: str,
    detail: str,
    *,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_JSON)


HTTP_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def allowed_methods(request: Request) -> list[str]:
    """Every method some route takes on this path: routers sharing a path each know only theirs,
    so each method is asked of the whole routing table."""
    routes = request.app.router.routes
    return [
        method
        for method in HTTP_METHODS
        if any(route.matches({**request.scope, "method": method})[0] == Match.FULL for route in routes)
    ]


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(TSMError)
    async def _tsm_error(_request: Request, exc: TSMError) -> JSONResponse:
        return problem(exc.status, exc.title, exc.detail, headers=exc.headers, **exc.extra)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return await _tsm_error(request, validation_problem(list(exc.errors())))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        title = {404: "Not Found", 405: "Method Not Allowed"}.get(exc.status_code, "Error")
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(allowed_methods(request))
        return problem(exc.status_code, title, str(exc.detail), headers=headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem(500, "Internal Server Error", "An unexpected error occurred.")


# --- OpenAPI: what an error answer looks like, declared once ---------------------------------


class ProblemIssue(BaseModel):
    loc: list[str] = Field(description="Where: `body`, `query`, `path` or `header`, then the field.")
    msg: str
    type: str


class Problem(BaseModel):
    """RFC 9457 problem details; some answers add the members below."""

    model_config = ConfigDict(extra="allow")

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    current_state: str | None = Field(None, description="409: the task's or file's state that refused the request.")
    current_offset: int | None = Field(None, description="409 on a tus PATCH: the upload's real offset.")
    file_state: str | None = Field(None, description="409: the state of the file an import names.")
    known_kinds: list[str] | None = Field(None, description="422 for an unknown kind: the kinds there are.")
    errors: list[ProblemIssue] | None = Field(
        None, description=f"422: the first {MAX_REPORTED_ERRORS} validation errors (`detail` counts the rest)."
    )


PROBLEM_REF = "#/components/schemas/Problem"


def problems(*statuses: int | tuple[int, str]) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route: each status as an ``application/problem+json`` Problem.

    A status is an int (described by its exception's docstring) or ``(status, description)``.
    """
    responses: dict[int | str, dict[str, Any]] = {}
    for item in statuses:
        status, description = item if isinstance(item, tuple) else (item, _describe(item))
        responses[status] = {"description": description, "content": {PROBLEM_JSON: {"schema": {"$ref": PROBLEM_REF}}}}
    return responses


def _describe(status: int) -> str:
    if status == 422:
        return "The request's content is invalid; `errors` says where."
    return (error_for_status(status).__doc__ or error_for_status(status).title).strip()


def problem_schemas() -> dict[str, Any]:
    """The components the ``problems()`` references point at."""
    schema = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    definitions = schema.pop("$defs", {})
    return {**definitions, "Problem": schema}
