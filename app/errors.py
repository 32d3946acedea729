"""One error hierarchy, mapped once to RFC 9457 problem details.

Each exception's docstring is its default message. Services raise these; nothing else
decides an HTTP status. Unexpected exceptions become a bare 500 problem, never a trace.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

logger = logging.getLogger("tsm.errors")

PROBLEM_JSON = "application/problem+json"


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


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(TSMError)
    async def _tsm_error(_request: Request, exc: TSMError) -> JSONResponse:
        return problem(exc.status, exc.title, exc.detail, headers=exc.headers, **exc.extra)

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": [str(p) for p in e.get("loc", ())], "msg": e.get("msg"), "type": e.get("type")}
            for e in exc.errors()
        ]
        detail = "; ".join(_validation_message(e) for e in exc.errors()) or "Invalid request"
        return problem(422, "Unprocessable Content", detail, errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        title = {404: "Not Found", 405: "Method Not Allowed"}.get(exc.status_code, "Error")
        return problem(exc.status_code, title, str(exc.detail), headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem(500, "Internal Server Error", "An unexpected error occurred.")
