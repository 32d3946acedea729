"""The client's single implementation, written once without I/O ("sans-IO").

Every API call is a generator that *yields commands* and gets their results sent back:

    def get_task(self, task_id):                       # written once (clients._tasks) …
        response = yield Send("GET", f"/tasks/{task_id}")
        return Task.model_validate(response.json())

    Client.get_task("…")         → SyncDriver runs it with httpx.Client          (blocking)
    await AsyncClient.get_task() → AsyncDriver runs it with httpx.AsyncClient   (awaitable)

Commands: ``Send`` (an HTTP request), ``Chunk``/``Close`` (read a streamed body), ``Sleep``
(backoff), ``Call`` (blocking file work: run inline, or in a thread under asyncio) and ``Emit``
(hand one item to the caller of a streaming call). A transport failure is thrown back *into*
the generator at its ``yield``, so retry and resume logic lives in the generator too.

One operation uses another with ``yield from`` (``task = yield from self.get_task(id)``); the
drivers are in ``clients._drivers``, the public methods that run them in ``clients._bind``.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import httpx

T = TypeVar("T")


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


class Steps(Generic[T]):
    """Steps an operation: iterate for its commands, ``reply``/``fail`` each; ``value`` at the end.

    Streams the operation opened are remembered in ``opened``: if it is interrupted (Ctrl-C, an
    exception, a consumer that stops iterating) the driver closes them, since a generator that
    is being closed may not yield a ``Close`` any more.
    """

    value: T  # set once the operation has returned

    def __init__(self, op: Op[T]) -> None:
        self.op = op
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

    def __enter__(self) -> Steps[T]:
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
