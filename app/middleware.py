"""What every request goes through before a route sees it, outermost first:

    RequestContextMiddleware   X-Request-ID (kept if sane, else new) ─▶ log context ─▶ echoed;
                               response end ─▶ tsm.access line + tsm_http_request_duration_seconds
    MethodOverrideMiddleware   tus: X-HTTP-Method-Override on /files… routes the request as that method
    BodyLimitMiddleware        a body that is not upload bytes: over TSM_MAX_JSON_BODY_BYTES ─▶ 413,
                               counted while it streams in, before anything parses it

Plain ASGI middlewares (not BaseHTTPMiddleware), so streaming responses (downloads, server-sent
events) pass through untouched and the log context is the same one the endpoint runs in.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import BadRequest, PayloadTooLarge
from app.http.problems import problem
from app.http.tus import is_offset_stream, tus_headers
from app.logs import request_context
from app.metrics import HTTP_REQUEST_SECONDS

REQUEST_ID_HEADER = "X-Request-ID"
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")
# Probes and scrapes arrive every few seconds: log them only at debug level.
_QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})

access_logger = logging.getLogger("tsm.access")


def incoming_request_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            text = value.decode("latin-1").strip()
            return text if _VALID_REQUEST_ID.fullmatch(text) else None
    return None


def route_template(scope: Scope) -> str:
    """``/tasks/{task_id}`` rather than the concrete path, so the label set stays small."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = incoming_request_id(scope) or uuid.uuid4().hex
        status = 500  # what the client gets if the app raises before it answers
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        with request_context(request_id, scope):
            try:
                await self.app(scope, receive, send_with_id)
            finally:
                elapsed = time.perf_counter() - started
                method, route = scope["method"], route_template(scope)
                HTTP_REQUEST_SECONDS.labels(method, route, str(status)).observe(elapsed)
                level = logging.DEBUG if scope["path"] in _QUIET_PATHS else logging.INFO
                if access_logger.isEnabledFor(level):
                    access_logger.log(
                        level,
                        "%s %s %d %.1fms",
                        method,
                        scope["path"],
                        status,
                        elapsed * 1000,
                        extra={  # request_id, task_id: added by the log filter, as on every line
                            "method": method,
                            "path": scope["path"],
                            "route": route,
                            "status": status,
                            "duration_ms": round(elapsed * 1000, 2),
                            "client": (scope.get("client") or (None,))[0],
                        },
                    )


_TUS_PATH = re.compile(r"^/files(/[^/]+)?/?$")
_METHOD = re.compile(r"^[A-Za-z]{1,16}$")


async def _answer(scope: Scope, receive: Receive, send: Send, error: BadRequest | PayloadTooLarge) -> None:
    headers = {**error.headers, **(tus_headers() if "tus-resumable" in Headers(scope=scope) else {})}
    await problem(error.status, error.title, error.detail, headers=headers)(scope, receive, send)


class MethodOverrideMiddleware:
    """tus: ``X-HTTP-Method-Override`` makes a request to /files or /files/{id} that method.

    The tus spec asks servers to honour it on every route (GET + OPTIONS, POST + PATCH, …), for
    clients behind proxies that pass only GET and POST. An override to HEAD answers without the
    Content-Length the real method would then expect a body for.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        override = Headers(scope=scope).get("x-http-method-override") if scope["type"] == "http" else None
        if override is None or not _TUS_PATH.fullmatch(scope["path"]):
            await self.app(scope, receive, send)
            return
        if not _METHOD.fullmatch(override.strip()):
            await _answer(scope, receive, send, BadRequest("X-HTTP-Method-Override must name an HTTP method"))
            return
        method = override.strip().upper()
        real = scope["method"]

        async def send_as_real(message: Message) -> None:
            if message["type"] == "http.response.start" and method == "HEAD" != real:
                del MutableHeaders(scope=message)["content-length"]
            await send(message)

        scope["method"] = method  # in place: the access line and metrics see the route it reached
        await self.app(scope, receive, send_as_real)


class BodyLimitMiddleware:
    """Caps every request body except upload bytes (``application/offset+octet-stream``).

    The body is read here, up to the cap, and handed on whole: a declared Content-Length over
    the cap is refused before a byte is read, a streamed one as soon as it passes the cap.
    tus bodies keep their own limits (TSM_MAX_CHUNK_BYTES, TSM_MAX_UPLOAD_BYTES, the quota).
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = Headers(scope=scope) if scope["type"] == "http" else None
        if headers is None or is_offset_stream(headers.get("content-type")):
            await self.app(scope, receive, send)
            return
        too_large = PayloadTooLarge(f"the request body is larger than {self.max_bytes} bytes")
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await _answer(scope, receive, send, too_large)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client left before it finished sending: nobody to answer
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await _answer(scope, receive, send, too_large)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        pending: Message | None = {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        async def replay() -> Message:
            nonlocal pending
            if pending is None:
                return await receive()  # after the body: the disconnect a streaming response waits for
            message, pending = pending, None
            return message

        await self.app(scope, replay, send)
