"""One error hierarchy: what went wrong, and the HTTP status that says so.

Each exception's docstring is its default message (and the description of its status in the
API spec: ``responses=problems(404, 409)``). Services raise these; nothing else decides an
HTTP status. The mapping to RFC 9457 problem details lives in app/http/problems.py, so this
module needs no web framework and the services that raise these need none either.
"""

from __future__ import annotations

from typing import Any

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


class Forbidden(TSMError):
    """This request is never allowed on this resource."""

    status, title = 403, "Forbidden"


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


class ServiceUnavailable(TSMError):
    """The service cannot take work right now; retry shortly."""

    status, title = 503, "Service Unavailable"


class TooManyRequests(TSMError):
    """A limit for this owner has been reached."""

    status, title = 429, "Too Many Requests"


class ChecksumMismatch(TSMError):
    """The chunk's checksum does not match Upload-Checksum; the chunk was discarded."""

    status, title = 460, "Checksum Mismatch"


class InsufficientStorage(TSMError):
    """The server's disk is full; the bytes before this chunk are kept."""

    status, title = 507, "Insufficient Storage"


def error_for_status(status: int) -> type[TSMError]:
    """The exception class that answers ``status`` (its docstring describes the status in OpenAPI)."""
    return _BY_STATUS[status]


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
