"""Logging: plain text by default, one JSON object per line with ``TSM_LOG_JSON=true``.

Every line says whose work it is about, without any call site passing it along:

    request middleware ── sets request_id (and the ASGI scope) ─┐
    task runner        ── sets task_id and owner ───────────────┼─▶ ContextFilter ─▶ record fields
    route matched      ── scope["path_params"]["task_id"] ──────┘    (read when a line is logged)

The values live in context variables, so each request and each running task (an asyncio task
of its own) sees only its own; the filter sits on the handler, so lines from every logger
(``tsm.*``, ``uvicorn.*``, a plug-in kind's own) get them.

Logged text often comes from outside (a request path, a header, a file name): in plain text,
control characters are escaped and a traceback's lines are indented, so a record's first line
is the only one that starts at column 0 and nobody can forge a line. JSON escapes by itself.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, TextIO

from app.config import Settings

CONTEXT_FIELDS = ("request_id", "owner", "task_id")

_request_id: ContextVar[str | None] = ContextVar("tsm_request_id", default=None)
_owner: ContextVar[str | None] = ContextVar("tsm_owner", default=None)
_task_id: ContextVar[str | None] = ContextVar("tsm_task_id", default=None)
# The request's ASGI scope: the router fills in path_params after the middleware has run,
# so a line logged inside an endpoint for /tasks/{task_id} can still name its task.
_scope: ContextVar[MutableMapping[str, Any] | None] = ContextVar("tsm_scope", default=None)

# Attributes every LogRecord has; anything else on a record was passed through ``extra=``.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


@contextmanager
def request_context(request_id: str, scope: MutableMapping[str, Any] | None = None) -> Iterator[None]:
    """Mark the current context as serving one request; restore the previous context after."""
    tokens = (
        (_request_id, _request_id.set(request_id)),
        (_scope, _scope.set(scope)),
        (_owner, _owner.set(None)),
        (_task_id, _task_id.set(None)),
    )
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


def bind(*, owner: str | None = None, task_id: str | None = None) -> None:
    """Mark the current context as acting for ``owner`` and/or on ``task_id``.

    The task runner binds both for its whole asyncio task; inside a request, whatever learns
    the caller (authentication) may bind ``owner`` for the rest of that request.
    """
    if owner is not None:
        _owner.set(owner)
    if task_id is not None:
        _task_id.set(task_id)


def context_fields() -> dict[str, str]:
    """The request id, owner and task id of the current context (those that are known)."""
    fields = {"request_id": _request_id.get(), "owner": _owner.get(), "task_id": _task_id.get()}
    scope = _scope.get()
    if fields["task_id"] is None and scope is not None:
        task_id = (scope.get("path_params") or {}).get("task_id")
        if isinstance(task_id, str):
            fields["task_id"] = task_id
    return {key: value for key, value in fields.items() if value is not None}


class ContextFilter(logging.Filter):
    """Copies the context's fields onto each record (explicit ``extra=`` values win)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in context_fields().items():
            if getattr(record, key, None) is None:
                setattr(record, key, value)
        return True


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    """The context fields first, then any ``extra=`` fields in name order."""
    fields = record.__dict__
    rest = sorted(fields.keys() - _STANDARD - set(CONTEXT_FIELDS))
    return {
        key: fields[key] for key in (*CONTEXT_FIELDS, *rest) if fields.get(key) is not None and not key.startswith("_")
    }


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, context fields and ``extra=``."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in _extras(record).items():
            entry.setdefault(key, value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


# C0 and C1 controls, DEL, and the Unicode line and paragraph separators: whatever a viewer
# could take for the end of a line (or use to rewrite it, as terminal escapes do).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_control(match: re.Match[str]) -> str:
    char = match.group()
    return _NAMED.get(char) or (f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")


def escape_controls(text: str) -> str:
    """``text`` on one line: control characters become their backslash escapes."""
    return _CONTROL.sub(_escape_control, text)


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message [request_id=… owner=… task_id=…]``, then any traceback,
    indented."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        record.message = record.getMessage()
        record.asctime = self.formatTime(record, self.datefmt)
        line = escape_controls(self.formatMessage(record))
        tags = " ".join(f"{key}={getattr(record, key)}" for key in CONTEXT_FIELDS if getattr(record, key, None))
        if tags:
            line = f"{line} [{escape_controls(tags)}]"
        below: list[str] = []
        if record.exc_info:
            record.exc_text = record.exc_text or self.formatException(record.exc_info)
        if record.exc_text:
            below.append(record.exc_text)
        if record.stack_info:
            below.append(self.formatStack(record.stack_info))
        for block in below:
            line += "".join(f"\n  {escape_controls(part)}" for part in block.splitlines())
        return line


class _Stderr:
    """Whatever ``sys.stderr`` is at the time of writing (test runners swap it per test)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure_logging(settings: Settings, stream: TextIO | None = None) -> logging.Handler:
    """Route every log line through one handler with the context filter.

    ``tsm.*`` and ``uvicorn.*`` log at ``TSM_LOG_LEVEL``; other libraries' lines (and a plug-in
    kind's own logger) reach the same handler through the root logger, at the root's level.
    uvicorn's own access log is switched off: ``tsm.access`` (see app/middleware.py) replaces it
    with lines that carry the request id, the route and the duration.
    """
    handler = logging.StreamHandler(stream or _Stderr())
    handler.setFormatter(JsonFormatter() if settings.log_json else TextFormatter())
    handler.addFilter(ContextFilter())
    handler.set_name("tsm")
    level = settings.log_level.upper()
    for name in ("tsm", "uvicorn"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level)
        logger.propagate = False
    root = logging.getLogger()
    root.handlers[:] = [*(h for h in root.handlers if h.get_name() != "tsm"), handler]
    access = logging.getLogger("uvicorn.access")
    access.handlers[:] = []
    access.propagate = False
    access.disabled = True
    return handler
