"""The client's single implementation, written once without I/O ("sans-IO").

Every API call is a generator that *yields commands* and gets their results sent back:

    def get_task(self, task_id):                       # written once …
        response = yield Send("GET", f"/tasks/{task_id}")
        return Task.model_validate(response.json())

    Client.get_task("…")         → SyncDriver runs it with httpx.Client          (blocking)
    await AsyncClient.get_task() → AsyncDriver runs it with httpx.AsyncClient   (awaitable)

Commands: ``Send`` (an HTTP request), ``Chunk``/``Close`` (read a streamed body), ``Sleep``
(backoff), ``Call`` (blocking file work: run inline, or in a thread under asyncio) and ``Emit``
(hand one item to the caller of a streaming call). A transport failure is thrown back *into*
the generator at its ``yield``, so retry and resume logic lives in the generator too.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Generator, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Concatenate, Generic, ParamSpec, TypeVar, overload

import httpx

if TYPE_CHECKING:
    from clients.client import AsyncClient, Client

T = TypeVar("T")
P = ParamSpec("P")


@dataclass
class Send:
    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    params: dict[str, Any] | None = None
    json: Any = None
    content: bytes | Iterable[bytes] | None = None
    stream: bool = False  # leave the body unread: read it with Chunk, release it with Close
    chunk_size: int | None = None  # streamed pieces of this size (None: as they arrive)
    timeout: httpx.Timeout | None = None


@dataclass
class Chunk:
    """Next piece of a streamed body (b"" at its end)."""

    response: httpx.Response


@dataclass
class Close:
    response: httpx.Response


@dataclass
class Sleep:
    seconds: float


@dataclass
class Call:
    """Blocking work (disk I/O, hashing): inline when sync, in a worker thread under asyncio."""

    fn: Callable[..., Any]
    args: tuple[Any, ...] = ()


@dataclass
class Emit:
    value: Any


Command = Send | Chunk | Close | Sleep | Call | Emit
Op = Generator[Command, Any, T]


class Steps:
    """Steps an operation: iterate for its commands, ``reply``/``fail`` each; ``value`` at the end.

    Streams the operation opened are remembered in ``opened``: if it is interrupted (Ctrl-C, an
    exception, a consumer that stops iterating) the driver closes them, since a generator that
    is being closed may not yield a ``Close`` any more.
    """

    def __init__(self, op: Op[Any]) -> None:
        self.op = op
        self.value: Any = None
        self.opened: list[httpx.Response] = []
        self._reply: Any = None
        self._error: BaseException | None = None

    def reply(self, value: Any) -> None:
        self._reply = value

    def fail(self, error: BaseException) -> None:
        self._error = error

    def settled(self, command: Command, result: Any) -> None:
        if isinstance(command, Send) and command.stream:
            self.opened.append(result)
        self._reply = result

    def __iter__(self) -> Iterator[Command]:
        while True:
            reply, error = self._reply, self._error
            self._reply = self._error = None
            try:
                yield self.op.throw(error) if error is not None else self.op.send(reply)
            except StopIteration as stop:
                self.value = stop.value
                return

    def __enter__(self) -> Steps:
        return self

    def __exit__(self, *exc: object) -> None:
        self.op.close()  # an interrupted operation runs its ``finally`` blocks now


def consume(op: Op[T], on_emit: Callable[[Any], bool]) -> Op[T | None]:
    """Run ``op`` inside another operation, feeding its emitted items to ``on_emit`` (True = stop)."""
    with Steps(op) as steps:
        for command in steps:
            if isinstance(command, Emit):
                if on_emit(command.value):
                    return None
                continue
            try:
                steps.reply((yield command))
            except httpx.HTTPError as exc:
                steps.fail(exc)
    return steps.value


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
        for final, value in self._walk(op):
            if final:
                return value
        raise AssertionError("unreachable")

    def iterate(self, op: Op[Any]) -> Iterator[Any]:
        for final, value in self._walk(op):
            if not final:
                yield value

    def _walk(self, op: Op[Any]) -> Iterator[tuple[bool, Any]]:
        """Yields ``(False, item)`` per emitted item, then ``(True, result)``."""
        with Steps(op) as steps:
            try:
                for command in steps:
                    if isinstance(command, Emit):
                        yield False, command.value
                    else:
                        try:
                            steps.settled(command, self.execute(command))
                        except httpx.HTTPError as exc:
                            steps.fail(exc)
                yield True, steps.value
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
        walk = self._walk(op)
        try:
            async for final, value in walk:
                if final:
                    return value
        finally:
            await walk.aclose()
        raise AssertionError("unreachable")

    async def iterate(self, op: Op[Any]) -> AsyncIterator[Any]:
        async for final, value in self._walk(op):
            if not final:
                yield value

    async def _walk(self, op: Op[Any]) -> AsyncGenerator[tuple[bool, Any], None]:
        with Steps(op) as steps:
            try:
                for command in steps:
                    if isinstance(command, Emit):
                        yield False, command.value
                    else:
                        try:
                            steps.settled(command, await self.execute(command))
                        except httpx.HTTPError as exc:
                            steps.fail(exc)
                yield True, steps.value
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


def _bind(descriptor: Any, obj: Any, drive: str) -> Any:
    """``descriptor.fn`` bound to ``obj``, its ``Op`` generator run by the client's driver."""
    fn = descriptor.fn
    run = getattr(obj._driver, drive)

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        return run(fn(obj, *args, **kwargs))

    return call


class operation(Generic[P, T]):  # noqa: N801 — used as a decorator, like ``property``
    """Turns an ``Op`` generator method into ``Client.m(...) -> T`` and ``AsyncClient.m(...) -> Awaitable[T]``."""

    def __init__(self, fn: Callable[Concatenate[Any, P], Op[T]]) -> None:
        self.fn = fn
        self.__doc__ = fn.__doc__
        self.__name__ = fn.__name__

    @overload
    def __get__(self, obj: None, owner: type) -> operation[P, T]: ...
    @overload
    def __get__(self, obj: Client, owner: type) -> Callable[P, T]: ...
    @overload
    def __get__(self, obj: AsyncClient, owner: type) -> Callable[P, Awaitable[T]]: ...
    def __get__(self, obj: Any, owner: type) -> Any:
        return self if obj is None else _bind(self, obj, "run")


class Stream(operation[P, T]):
    """Like :class:`operation` for calls that ``Emit`` items: ``Iterator[T]`` / ``AsyncIterator[T]``."""

    @overload  # type: ignore[override]
    def __get__(self, obj: None, owner: type) -> Stream[P, T]: ...
    @overload
    def __get__(self, obj: Client, owner: type) -> Callable[P, Iterator[T]]: ...
    @overload
    def __get__(self, obj: AsyncClient, owner: type) -> Callable[P, AsyncIterator[T]]: ...
    def __get__(self, obj: Any, owner: type) -> Any:
        return self if obj is None else _bind(self, obj, "iterate")


def stream(item: type[T]) -> Callable[[Callable[Concatenate[Any, P], Op[Any]]], Stream[P, T]]:
    """``@stream(Task)``: the decorated generator emits ``Task`` items."""

    def decorate(fn: Callable[Concatenate[Any, P], Op[Any]]) -> Stream[P, T]:
        return Stream(fn)

    return decorate
