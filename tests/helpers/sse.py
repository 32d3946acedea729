"""Reading a server-sent event stream from the app in-process, while it is still open.

httpx's ASGI transport hands back a response only once its body is complete, which an endless
stream never is: :class:`EventStream` drives the ASGI app itself, parses events as they are
sent, and disconnects like a browser closing the tab.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI


@dataclass
class Event:
    event: str
    data: Any
    id: str | None = None


@dataclass
class EventStream:
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    ended: bool = False
    _buffer: str = ""
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def feed(self, chunk: str) -> None:
        self._buffer += chunk
        while "\n\n" in self._buffer:
            block, self._buffer = self._buffer.split("\n\n", 1)
            fields: dict[str, str] = {}
            for line in block.split("\n"):
                if line.startswith(":"):
                    self.comments.append(line[1:].strip())
                elif line:
                    name, _, value = line.partition(": ")
                    fields[name] = value
            if "data" in fields:
                self.events.append(Event(fields.get("event", "message"), json.loads(fields["data"]), fields.get("id")))
        self._changed.set()

    async def wait(self, predicate: Callable[[EventStream], Any], timeout: float = 20.0) -> Any:
        """Until ``predicate(self)`` is truthy (its value), or fail after ``timeout`` seconds."""
        async with asyncio.timeout(timeout):
            while not (value := predicate(self)):
                if self.ended:
                    raise AssertionError(f"the stream ended first: {self.events} {self.comments}")
                self._changed.clear()
                await self._changed.wait()
        return value

    def of(self, name: str) -> list[Any]:
        return [event.data for event in self.events if event.event == name]


@contextlib.asynccontextmanager
async def open_stream(app: FastAPI, path: str, headers: dict[str, str] | None = None) -> AsyncIterator[EventStream]:
    """``async with open_stream(app, "/tasks/events") as stream: await stream.wait(...)``"""
    target, _, query = path.partition("?")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},  # < 2.4: the app listens for the disconnect
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": target,
        "raw_path": target.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in {"host": "tsm.test", **(headers or {})}.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("tsm.test", 80),
    }
    stream = EventStream()
    started = asyncio.Event()
    disconnect = asyncio.Event()
    requested = False

    async def receive() -> dict[str, Any]:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await disconnect.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            stream.status = message["status"]
            stream.headers = {k.decode().lower(): v.decode() for k, v in message["headers"]}
            started.set()
        elif message["type"] == "http.response.body":
            stream.feed(message.get("body", b"").decode())
            if not message.get("more_body", False):
                stream.ended = True
                stream._changed.set()

    running = asyncio.create_task(app(scope, receive, send))
    try:
        async with asyncio.timeout(20):
            await started.wait()
        yield stream
    finally:
        disconnect.set()
        async with asyncio.timeout(10):
            await running
