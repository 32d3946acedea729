"""Fixtures: every ``db_url`` test runs on a real SQLite file and a real PostgreSQL database.

Without PostgreSQL the PostgreSQL cases skip — except under ``CI=true``, where that is a failure.
Helpers the tests import live in ``tests/helpers``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.config import Settings
from tests.helpers.apps import make_settings, open_app
from tests.helpers.database import IN_CI, PG_ADMIN_URL, clean_pg, drop_pg_database, reset_pg_database


@pytest.fixture(scope="session")
def pg_url() -> Any:
    url = asyncio.run(reset_pg_database())
    if url is None:
        message = f"PostgreSQL is not reachable at {PG_ADMIN_URL}"
        if IN_CI:
            pytest.fail(f"{message}; CI requires the PostgreSQL tests to run")
        pytest.skip(message)
    yield url
    asyncio.run(drop_pg_database())


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'tsm.sqlite3'}"
        return
    url = request.getfixturevalue("pg_url")
    asyncio.run(clean_pg(url))
    yield url


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return make_settings(db_url, tmp_path / "storage")


@pytest.fixture
async def running_app(settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    async with open_app(settings) as pair:
        yield pair


@pytest.fixture
def app(running_app: tuple[FastAPI, httpx.AsyncClient]) -> FastAPI:
    return running_app[0]


@pytest.fixture
def client(running_app: tuple[FastAPI, httpx.AsyncClient]) -> httpx.AsyncClient:
    return running_app[1]
