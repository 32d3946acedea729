"""Fixtures: every ``db_url`` test runs on a real SQLite file and a real PostgreSQL database;
a module that parametrizes ``store`` (local, s3) runs on the local directory and on a real
S3 server too (SeaweedFS, see tests/helpers/s3.py), each test under its own key prefix.

Without PostgreSQL (or the S3 server) those cases skip — except under ``CI=true``, where that
is a failure. Helpers the tests import live in ``tests/helpers``.
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
from tests.helpers.s3 import S3Server, seaweedfs, store_settings


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


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    try:
        with seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as server:
            yield server
    except RuntimeError as exc:
        if IN_CI:
            pytest.fail(f"{exc}; CI requires the S3 tests to run")
        pytest.skip(str(exc))


@pytest.fixture
def store(request: pytest.FixtureRequest) -> str:
    """Where bytes live: "local" unless the module parametrizes it (indirect) with "s3".
    A test marked ``local_only`` looks at files on disk and skips on S3."""
    kind = getattr(request, "param", "local")
    if kind == "s3" and request.node.get_closest_marker("local_only"):
        pytest.skip("looks at the local storage directory")
    return str(kind)


@pytest.fixture
def store_overrides(store: str, request: pytest.FixtureRequest) -> dict[str, Any]:
    """Settings for the ``store`` a test runs on, for fixtures that make their own settings
    (sync, like ``settings``: the S3 server starts outside any event loop)."""
    return store_settings(request.getfixturevalue("s3_server")) if store == "s3" else {}


@pytest.fixture
def settings(db_url: str, tmp_path: Path, store: str, request: pytest.FixtureRequest) -> Settings:
    if store == "s3":
        server: S3Server = request.getfixturevalue("s3_server")
        return make_settings(db_url, tmp_path / "storage", **store_settings(server))
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
