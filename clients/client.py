"""``Client`` and ``AsyncClient``: the same API (``ClientAPI``), two drivers.

with Client("http://127.0.0.1:8000", token) as tsm:        async with AsyncClient(...) as tsm:
    task = tsm.create_task("process", {"steps": 5})             task = await tsm.create_task(...)
    tsm.wait(task.id)                                            await tsm.wait(task.id)
    for event in tsm.events(task.id): ...                        async for event in tsm.events(...): ...

Each public method is one operation generator of :class:`clients._jobs.Operations`, run by the
client's driver (``clients._bind``); the list below is the whole public API.
"""

from __future__ import annotations

from typing import ClassVar, Literal, Unpack

import httpx

from clients._base import Settings
from clients._bind import operation, stream
from clients._drivers import AsyncDriver, SyncDriver
from clients._jobs import Operations
from clients.models import Event, FileInfo, Task
from clients.store import ResumeStore


class ClientAPI:
    """The calls both clients offer; ``operations`` holds the settings (server, retries …)."""

    def __init__(self, server: str | None = None, token: str | None = None, **settings: Unpack[Settings]) -> None:
        self.operations = Operations(server, token, **settings)

    @property
    def server(self) -> str:
        return self.operations.server

    @property
    def store(self) -> ResumeStore:
        """Where interrupted transfers are remembered."""
        return self.operations.store

    # tasks
    kinds = operation(Operations.kinds)
    create_task = operation(Operations.create_task)
    check_task = operation(Operations.check_task)
    preview_csv = operation(Operations.preview_csv)
    list_tasks = operation(Operations.list_tasks)
    iter_tasks = stream(Operations.iter_tasks, Task)
    get_task = operation(Operations.get_task)
    pause = operation(Operations.pause)
    resume = operation(Operations.resume)
    cancel = operation(Operations.cancel)
    events = stream(Operations.events, Event)
    wait = operation(Operations.wait)
    # files and transfers
    list_files = operation(Operations.list_files)
    iter_files = stream(Operations.iter_files, FileInfo)
    file_info = operation(Operations.file_info)
    delete_file = operation(Operations.delete_file)
    upload = operation(Operations.upload)
    download = operation(Operations.download)
    # imports and exports
    import_csv = operation(Operations.import_csv)
    export_csv = operation(Operations.export_csv)
    fetch_export = operation(Operations.fetch_export)


class Client(ClientAPI):
    """Blocking client. ``server``/``token`` default to ``$TSM_SERVER``/``$TSM_TOKEN``; the keyword
    settings (``timeout``, ``retries``, ``backoff``, ``max_backoff``, ``chunk_size``, ``cache_dir``)
    are described in :class:`clients._base.Core`. ``transport`` may be any ``httpx.BaseTransport``
    (for tests or proxies)."""

    asynchronous: ClassVar[Literal[False]] = False

    def __init__(
        self,
        server: str | None = None,
        token: str | None = None,
        *,
        transport: httpx.BaseTransport | None = None,
        **settings: Unpack[Settings],
    ) -> None:
        super().__init__(server, token, **settings)
        ops = self.operations
        self._http = httpx.Client(base_url=ops.server, headers=ops.headers, timeout=ops.timeout, transport=transport)
        self.driver = SyncDriver(self._http)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient(ClientAPI):
    """asyncio client: every call is awaited, streaming calls are ``async for``-iterated. Settings
    as for :class:`Client`; ``transport`` may be any ``httpx.AsyncBaseTransport``."""

    asynchronous: ClassVar[Literal[True]] = True

    def __init__(
        self,
        server: str | None = None,
        token: str | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        **settings: Unpack[Settings],
    ) -> None:
        super().__init__(server, token, **settings)
        ops = self.operations
        self._http = httpx.AsyncClient(
            base_url=ops.server, headers=ops.headers, timeout=ops.timeout, transport=transport
        )
        self.driver = AsyncDriver(self._http)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
