"""Per-request context: a request id on every line, one access line, HTTP latency by route.

    X-Request-ID (kept if sane, else a new one) ─▶ log context ─▶ echoed on the response
    response start ─▶ status;  response end ─▶ tsm.access line + tsm_http_request_duration_seconds

A plain ASGI middleware (not BaseHTTPMiddleware), so streaming responses (downloads, server-sent
events) pass through untouched and the log context is the same one the endpoint runs in.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

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
