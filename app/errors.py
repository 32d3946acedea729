"""One error hierarchy, mapped once to RFC 9457 problem details, and declared once in OpenAPI.

Each exception's docstring is its default message (and the description of its status in the
API spec: ``responses=problems(404, 409)``). Services raise these; nothing else decides an
HTTP status. Unexpected exceptions become a bare 500 problem, never a trace.
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

logger = logging.getLogger("tsm.errors")

PROBLEM_JSON = "application/problem+json"
# A validation problem lists this many errors and counts the rest: a hostile body with a
# million mistakes must not come back as a response forty times its size.
MAX_REPORTED_ERRORS = 20


class TSMError(Exception):
    """The request could not be completed."""

    status: int = 500
    title: str = "Internal Server Error"

    def __init__(
        self,
        detail: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        self.detail = detail or (self.__doc__ or self.title).strip()
        self.headers = headers or {}
        self.extra = extra
        super().__init__(self.detail)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _BY_STATUS.setdefault(cls.status, cls)


_BY_STATUS: dict[int, type[TSMError]] = {}


class BadRequest(TSMError):
    """The request is malformed."""

    status, title = 400, "Bad Request"


class Unauthorized(TSMError):
    """A valid API key is required: send `Authorization: Bearer <key>`."""

    status, title = 401, "Unauthorized"

    def __init__(self, detail: str | None = None, **extra: Any) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": "Bearer"}, **extra)


class NotFound(TSMError):
    """No such resource."""

    status, title = 404, "Not Found"


class Conflict(TSMError):
    """The request conflicts with the resource's current state."""

    status, title = 409, "Conflict"


class Gone(TSMError):
    """The resource existed but has been removed."""

    status, title = 410, "Gone"


class PreconditionFailed(TSMError):
    """A precondition of the request does not hold."""

    status, title = 412, "Precondition Failed"


class PayloadTooLarge(TSMError):
    """The request body or resource is larger than allowed."""

    status, title = 413, "Content Too Large"


class UnsupportedMediaType(TSMError):
    """The request's Content-Type is not supported here."""

    status, title = 415, "Unsupported Media Type"


class RangeNotSatisfiable(TSMError):
    """The requested range is not satisfiable."""

    status, title = 416, "Range Not Satisfiable"


class Unprocessable(TSMError):
    """The request is well-formed but its content is invalid."""

    status, title = 422, "Unprocessable Content"


class Locked(TSMError):
    """The resource is busy with another request."""

    status, title = 423, "Locked"


class TooManyRequests(TSMError):
    """A limit for this owner has been reached."""

    status, title = 429, "Too Many Requests"


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


def _validation_message(error: dict[str, Any]) -> str:
    where = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
    return f"{where}: {error.get('msg', 'invalid')}" if where else str(error.get("msg", "invalid"))


def validation_problem(errors: list[dict[str, Any]], total: int | None = None) -> Unprocessable:
    """A 422 naming the first MAX_REPORTED_ERRORS of ``total`` errors (default: all of ``errors``)."""
    total = len(errors) if total is None else total
    shown = errors[:MAX_REPORTED_ERRORS]
    detail = "; ".join(_validation_message(e) for e in shown) or "Invalid request"
    if total > len(shown):
        detail += f" (and {total - len(shown)} more errors)"
    issues = [{"loc": [str(p) for p in e.get("loc", ())], "msg": e.get("msg"), "type": e.get("type")} for e in shown]
    return Unprocessable(detail, errors=issues)


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
    return (_BY_STATUS[status].__doc__ or _BY_STATUS[status].title).strip()


def problem_schemas() -> dict[str, Any]:
    """The components the ``problems()`` references point at."""
    schema = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    definitions = schema.pop("$defs", {})
    return {**definitions, "Problem": schema}
