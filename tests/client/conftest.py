"""The client tests share one live server per module and database."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from tests.helpers.clients import Live
from tests.helpers.database import clean_pg
from tests.helpers.server import LiveServer


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def live(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    root = tmp_path_factory.mktemp(f"live-{request.param}")
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{root / 'tsm.sqlite3'}"
    else:
        url = request.getfixturevalue("pg_url")
        asyncio.run(clean_pg(url))
    with LiveServer(url, root / "storage") as server:
        yield Live(server, root)
