"""One exception tree for everything the client can report.

    TSMError
     ├── ConnectionFailed        the server could not be reached (refused, DNS, timeout)
     ├── ProtocolError           the server answered something the protocol does not allow
     ├── IntegrityError          a transfer finished but its size or checksum is wrong
     ├── TaskEnded               a waited-for task ended in a state not waited for (failed …)
     ├── WaitTimeout             waiting for a task took longer than the caller allowed
     └── APIError                an HTTP error answer, parsed from its RFC 9457 problem body
          ├── BadRequest 400, Unauthorized 401, Forbidden 403, NotFound 404, Conflict 409,
          ├── Gone 410, PreconditionFailed 412, PayloadTooLarge 413, UnsupportedMediaType 415,
          ├── RangeNotSatisfiable 416, Unprocessable 422, Locked 423, TooManyRequests 429,
          ├── ChecksumMismatch 460 (tus checksum extension)
          └── ServerError 5xx

``APIError.detail`` is the server's own message; extra problem members (``current_state`` …)
are kept in ``problem``.
"""

from __future__ import annotations

from typing import Any

import httpx

from clients.models import Task


class TSMError(Exception):
    """Base class of every error raised by the client."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class ConnectionFailed(TSMError):
    """The server could not be reached."""


class ProtocolError(TSMError):
    """The server's answer breaks the protocol (tus 1.0.0, HTTP ranges, the task API)."""


class IntegrityError(TSMError):
    """A transfer completed but its bytes do not match the expected size or checksum."""


class TaskEnded(TSMError):
    """A task the caller waited for ended in another state (``failed``, ``cancelled`` …)."""

    def __init__(self, task: Task) -> None:
        reason = f": {task.error}" if task.error else ""
        super().__init__(f"task {task.id} ({task.kind}) ended {task.state}{reason}")
        self.task = task


class WaitTimeout(TSMError):
    """The task did not reach the awaited state in time."""


class APIError(TSMError):
    """The server answered with an error status."""

    status: int = 0

    def __init__(self, detail: str, *, status: int, title: str = "", problem: dict[str, Any] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.problem = problem or {}

    def __str__(self) -> str:
        return f"{self.status} {self.title}: {self.detail}" if self.title else f"{self.status}: {self.detail}"


class BadRequest(APIError):
    """400"""


class Unauthorized(APIError):
    """401"""


class Forbidden(APIError):
    """403"""


class NotFound(APIError):
    """404"""


class Conflict(APIError):
    """409 — for tasks, ``current_state`` says which state refused the request."""

    @property
    def current_state(self) -> str | None:
        return self.problem.get("current_state")


class Gone(APIError):
    """410"""


class PreconditionFailed(APIError):
    """412"""


class PayloadTooLarge(APIError):
    """413"""


class UnsupportedMediaType(APIError):
    """415"""


class RangeNotSatisfiable(APIError):
    """416"""


class Unprocessable(APIError):
    """422"""


class Locked(APIError):
    """423"""


class TooManyRequests(APIError):
    """429"""


class ChecksumMismatch(APIError):
    """460"""


class ServerError(APIError):
    """5xx"""


BY_STATUS: dict[int, type[APIError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    410: Gone,
    412: PreconditionFailed,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
    416: RangeNotSatisfiable,
    422: Unprocessable,
    423: Locked,
    429: TooManyRequests,
    460: ChecksumMismatch,
}


def error_from_response(response: httpx.Response) -> APIError:
    """Map an error answer (whose body has been read) to the matching exception."""
    status = response.status_code
    problem: dict[str, Any] = {}
    try:
        body = response.json()
        if isinstance(body, dict):
            problem = body
    except ValueError:
        pass
    title = str(problem.get("title") or response.reason_phrase or "")
    detail = problem.get("detail")
    if not detail:
        text = response.text.strip()
        detail = text[:300] if text and not problem else title or f"HTTP {status}"
    cls = BY_STATUS.get(status) or (ServerError if status >= 500 else APIError)
    return cls(str(detail), status=status, title=title, problem=problem)


def raise_for_status(response: httpx.Response) -> httpx.Response:
    if response.status_code >= 400:
        raise error_from_response(response)
    return response
