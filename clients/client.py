"""``Client`` and ``AsyncClient``: the same API (``JobsAPI`` and its parents), two drivers.

with Client("http://127.0.0.1:8000", token) as tsm:        async with AsyncClient(...) as tsm:
    task = tsm.create_task("process", {"steps": 5})             task = await tsm.create_task(...)
    tsm.wait(task.id)                                            await tsm.wait(task.id)
    for event in tsm.events(task.id): ...                        async for event in tsm.events(...): ...
"""

from __future__ import annotations

from typing import Any

import httpx

from clients._core import AsyncDriver, SyncDriver
from clients._jobs import JobsAPI


class Client(JobsAPI):
    """Blocking client. Extra keyword arguments go to :class:`clients._base.BaseClient`;
    ``transport`` may be any ``httpx.BaseTransport`` (for tests or proxies)."""

    def __init__(self, server: str | None = None, token: str | None = None, **kwargs: Any) -> None:
        transport = kwargs.pop("transport", None)
        super().__init__(server, token, **kwargs)
        self._http = httpx.Client(base_url=self.server, headers=self.headers, timeout=self.timeout, transport=transport)
        self._driver = SyncDriver(self._http)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient(JobsAPI):
    """asyncio client: every call is awaited, streaming calls are ``async for``-iterated."""

    def __init__(self, server: str | None = None, token: str | None = None, **kwargs: Any) -> None:
        transport = kwargs.pop("transport", None)
        super().__init__(server, token, **kwargs)
        self._http = httpx.AsyncClient(
            base_url=self.server, headers=self.headers, timeout=self.timeout, transport=transport
        )
        self._driver = AsyncDriver(self._http)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
