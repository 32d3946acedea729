"""The two drivers that perform an operation's commands: blocking with ``httpx.Client``, or asyncio.

    run(op)     → the operation's result (items it emits are dropped)
    iterate(op) → the items it emits, as they come

Both step the generator with :class:`clients._core.Steps` and close every stream it opened
when it stops early, so an interrupted call leaves no connection behind.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any, TypeVar

import httpx

from clients._core import Call, Chunk, Close, Command, Emit, Op, Send, Sleep, Steps

T = TypeVar("T")


def build_request(http: httpx.Client | httpx.AsyncClient, command: Send, content: Any) -> httpx.Request:
    return http.build_request(
        command.method,
        command.url,
        headers=command.headers,
        params=command.params,
        json=command.json,
        content=content,
        timeout=command.timeout or http.timeout,
    )


class SyncDriver:
    """Performs commands with ``httpx.Client``, blocking."""

    def __init__(self, http: httpx.Client) -> None:
        self.http = http
        self.streams: dict[int, Iterator[bytes]] = {}

    def run(self, op: Op[T]) -> T:
        steps = Steps(op)
        for _ in self._walk(steps):
            pass
        return steps.value

    def iterate(self, op: Op[Any]) -> Iterator[Any]:
        yield from self._walk(Steps(op))

    def _walk(self, steps: Steps[Any]) -> Iterator[Any]:
        """Yields each emitted item; ``steps.value`` holds the result once it is exhausted."""
        with steps:
            try:
                for command in steps:
                    if isinstance(command, Emit):
                        yield command.value
                    else:
                        try:
                            steps.settled(command, self.execute(command))
                        except httpx.HTTPError as exc:
                            steps.fail(exc)
            finally:
                for response in steps.opened:
                    self.streams.pop(id(response), None)
                    response.close()

    def execute(self, command: Command) -> Any:
        if isinstance(command, Send):
            response = self.http.send(build_request(self.http, command, command.content), stream=True)
            if command.stream and response.status_code < 400:
                self.streams[id(response)] = response.iter_bytes(command.chunk_size)
                return response
            try:
                response.read()
            finally:
                response.close()
            return response
        if isinstance(command, Chunk):
            return next(self.streams[id(command.response)], b"")
        if isinstance(command, Close):
            self.streams.pop(id(command.response), None)
            command.response.close()
            return None
        if isinstance(command, Sleep):
            time.sleep(command.seconds)
            return None
        assert isinstance(command, Call)
        return command.fn(*command.args)


async def _aiter(chunks: Iterable[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


class AsyncDriver:
    """Performs commands with ``httpx.AsyncClient``; blocking file work goes to a thread."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http
        self.streams: dict[int, AsyncIterator[bytes]] = {}

    async def run(self, op: Op[T]) -> T:
        steps = Steps(op)
        async for _ in self._walk(steps):
            pass
        return steps.value

    async def iterate(self, op: Op[Any]) -> AsyncIterator[Any]:
        async for item in self._walk(Steps(op)):
            yield item

    async def _walk(self, steps: Steps[Any]) -> AsyncIterator[Any]:
        with steps:
            try:
                for command in steps:
                    if isinstance(command, Emit):
                        yield command.value
                    else:
                        try:
                            steps.settled(command, await self.execute(command))
                        except httpx.HTTPError as exc:
                            steps.fail(exc)
            finally:
                for response in steps.opened:
                    self.streams.pop(id(response), None)
                    await response.aclose()

    async def execute(self, command: Command) -> Any:
        if isinstance(command, Send):
            content: Any = command.content
            if content is not None and not isinstance(content, bytes):
                content = _aiter(content)
            response = await self.http.send(build_request(self.http, command, content), stream=True)
            if command.stream and response.status_code < 400:
                self.streams[id(response)] = response.aiter_bytes(command.chunk_size)
                return response
            try:
                await response.aread()
            finally:
                await response.aclose()
            return response
        if isinstance(command, Chunk):
            return await anext(self.streams[id(command.response)], b"")
        if isinstance(command, Close):
            self.streams.pop(id(command.response), None)
            await command.response.aclose()
            return None
        if isinstance(command, Sleep):
            await asyncio.sleep(command.seconds)
            return None
        assert isinstance(command, Call)
        return await asyncio.to_thread(command.fn, *command.args)
