"""Public methods made from operation generators: one generator, a blocking and an awaitable method.

    class ClientAPI:                               # Operations.get_task(self, id) -> Op[Task]
        get_task = operation(Operations.get_task)
        iter_tasks = stream(Operations.iter_tasks, Task)

    Client(…).get_task(id)       → client.driver.run(client.operations.get_task(id))     → Task
    await AsyncClient(…).get_task(id)                                                     → Task
    Client(…).iter_tasks()       → client.driver.iterate(client.operations.iter_tasks())  → Iterator[Task]

A host says which driver it has (``SyncHost``: blocking, ``AsyncHost``: asyncio), and the
overloads of ``__get__`` give mypy the matching return types. At run time the methods carry
the generator's name, docstring and parameters, with the return type the caller gets, so
``help()``, ``inspect.signature`` and editors show the real call.
"""

from __future__ import annotations

import functools
import inspect
import types
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, ClassVar, Concatenate, Generic, Literal, ParamSpec, Protocol, TypeVar, get_args, overload

from clients._core import Op
from clients._drivers import AsyncDriver, SyncDriver

S = TypeVar("S")  # the object whose methods are the generators
S_co = TypeVar("S_co", covariant=True)
P = ParamSpec("P")
T = TypeVar("T")


class SyncHost(Protocol[S_co]):
    """A client whose ``driver`` runs the generators of its ``operations`` blocking."""

    asynchronous: ClassVar[Literal[False]]

    @property
    def operations(self) -> S_co: ...

    @property
    def driver(self) -> SyncDriver: ...


class AsyncHost(Protocol[S_co]):
    """A client whose ``driver`` runs the generators of its ``operations`` under asyncio."""

    asynchronous: ClassVar[Literal[True]]

    @property
    def operations(self) -> S_co: ...

    @property
    def driver(self) -> AsyncDriver: ...


class Binding(Generic[S, P]):
    """What :class:`operation` and :class:`stream` share: the generator, and dressing a method in its face."""

    def __init__(self, fn: Callable[Concatenate[S, P], Op[Any]]) -> None:
        self.fn = fn
        self.__name__ = fn.__name__
        self.__doc__ = fn.__doc__
        self.faces: dict[tuple[bool, bool], inspect.Signature] = {}

    @functools.cached_property
    def signature(self) -> inspect.Signature:
        """The generator's signature, annotations evaluated (on first use: every module is loaded by then)."""
        return inspect.signature(self.fn, eval_str=True)

    def face(self, bound: bool, asynchronous: bool) -> inspect.Signature:
        """A method's signature: the generator's parameters (less its self, when bound), the caller's result."""
        if (bound, asynchronous) not in self.faces:
            parameters = list(self.signature.parameters.values())[1 if bound else 0 :]
            self.faces[bound, asynchronous] = self.signature.replace(
                parameters=parameters, return_annotation=self.returns(asynchronous)
            )
        return self.faces[bound, asynchronous]

    def returns(self, asynchronous: bool) -> object:
        """What a call hands the caller (for an ``async def``: what awaiting it gives)."""
        raise NotImplementedError

    def bound(self, host: Any, asynchronous: bool) -> Callable[..., Any]:
        """The method of ``host``: it starts the generator and hands it to the host's driver."""
        raise NotImplementedError

    def unbound(self, asynchronous: bool) -> Callable[..., Any]:
        """The method as the class shows it (``Client.upload(client, …)``)."""

        def method(client: Any, *args: Any, **kwargs: Any) -> Any:
            return self.bound(client, asynchronous)(*args, **kwargs)

        return method

    def method(self, host: Any, owner: type) -> Callable[..., Any]:
        """``host.name``, or ``owner.name`` when ``host`` is None, in the generator's name and docstring."""
        asynchronous = bool(getattr(owner, "asynchronous", False))
        made = self.unbound(asynchronous) if host is None else self.bound(host, asynchronous)
        functools.update_wrapper(made, self.fn)
        made.__qualname__ = f"{owner.__qualname__}.{self.__name__}"
        face = self.face(host is not None, asynchronous)
        made.__dict__["__signature__"] = face  # what inspect.signature, help() and editors read
        made.__annotations__ = {p.name: p.annotation for p in face.parameters.values() if p.annotation is not p.empty}
        made.__annotations__["return"] = face.return_annotation
        return made


class operation(Binding[S, P], Generic[S, P, T]):  # noqa: N801 — a descriptor, named like ``property``
    """``Client.m(…) -> T`` and ``AsyncClient.m(…) -> Awaitable[T]`` from a generator ``m(…) -> Op[T]``."""

    def __init__(self, fn: Callable[Concatenate[S, P], Op[T]]) -> None:
        super().__init__(fn)

    def returns(self, asynchronous: bool) -> object:
        return get_args(self.signature.return_annotation)[-1]  # Op[T] is Generator[Command, Any, T]

    def bound(self, host: Any, asynchronous: bool) -> Callable[..., Any]:
        fn, operations, driver = self.fn, host.operations, host.driver
        if not asynchronous:
            return lambda *args, **kwargs: driver.run(fn(operations, *args, **kwargs))

        async def method(*args: Any, **kwargs: Any) -> Any:
            return await driver.run(fn(operations, *args, **kwargs))

        return method

    def unbound(self, asynchronous: bool) -> Callable[..., Any]:
        if not asynchronous:
            return super().unbound(asynchronous)

        async def method(client: Any, *args: Any, **kwargs: Any) -> Any:
            return await self.bound(client, asynchronous)(*args, **kwargs)

        return method

    @overload
    def __get__(self, host: None, owner: type[SyncHost[S]]) -> Callable[Concatenate[SyncHost[S], P], T]: ...
    @overload
    def __get__(
        self, host: None, owner: type[AsyncHost[S]]
    ) -> Callable[Concatenate[AsyncHost[S], P], Awaitable[T]]: ...
    @overload
    def __get__(self, host: SyncHost[S], owner: type) -> Callable[P, T]: ...
    @overload
    def __get__(self, host: AsyncHost[S], owner: type) -> Callable[P, Awaitable[T]]: ...
    def __get__(self, host: Any, owner: type) -> Any:
        return self.method(host, owner)


class stream(Binding[S, P], Generic[S, P, T]):  # noqa: N801 — a descriptor, named like ``property``
    """``Client.m(…) -> Iterator[T]`` and ``AsyncClient.m(…) -> AsyncIterator[T]``: the ``item``s ``m`` emits."""

    def __init__(self, fn: Callable[Concatenate[S, P], Op[None]], item: type[T]) -> None:
        super().__init__(fn)
        self.item = item

    def returns(self, asynchronous: bool) -> object:
        return types.GenericAlias(AsyncIterator if asynchronous else Iterator, (self.item,))

    def bound(self, host: Any, asynchronous: bool) -> Callable[..., Any]:
        fn, operations, driver = self.fn, host.operations, host.driver
        return lambda *args, **kwargs: driver.iterate(fn(operations, *args, **kwargs))

    @overload
    def __get__(self, host: None, owner: type[SyncHost[S]]) -> Callable[Concatenate[SyncHost[S], P], Iterator[T]]: ...
    @overload
    def __get__(
        self, host: None, owner: type[AsyncHost[S]]
    ) -> Callable[Concatenate[AsyncHost[S], P], AsyncIterator[T]]: ...
    @overload
    def __get__(self, host: SyncHost[S], owner: type) -> Callable[P, Iterator[T]]: ...
    @overload
    def __get__(self, host: AsyncHost[S], owner: type) -> Callable[P, AsyncIterator[T]]: ...
    def __get__(self, host: Any, owner: type) -> Any:
        return self.method(host, owner)
