"""Fixtures: every ``db_url`` test runs on a real SQLite file and a real PostgreSQL database.

PostgreSQL comes from ``TSM_TEST_PG_URL`` (default: the local server, database ``test``); the
suite works in its own database ``tsm_pytest`` beside it. Without PostgreSQL the PostgreSQL
cases skip — except under ``CI=true``, where that is a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.engine import make_url

from app.config import Settings
from app.main import create_app

PG_ADMIN_URL = os.environ.get("TSM_TEST_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
# One database per test session, so that parallel runs never meet.
PG_TEST_DB = f"tsm_pytest_{os.getpid()}"
IN_CI = os.environ.get("CI", "").lower() == "true"


def _dsn(url: str, database: str | None = None) -> str:
    parsed = make_url(url).set(drivername="postgresql")
    if database is not None:
        parsed = parsed.set(database=database)
    return parsed.render_as_string(hide_password=False)


async def _reset_pg_database() -> str | None:
    """Recreate the test database; returns its SQLAlchemy URL, or None if PostgreSQL is down."""
    try:
        conn = await asyncpg.connect(_dsn(PG_ADMIN_URL), timeout=5)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return None
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{PG_TEST_DB}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{PG_TEST_DB}"')
    finally:
        await conn.close()
    return make_url(PG_ADMIN_URL).set(database=PG_TEST_DB).render_as_string(hide_password=False)


async def _drop_pg_database() -> None:
    conn = await asyncpg.connect(_dsn(PG_ADMIN_URL), timeout=5)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{PG_TEST_DB}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def pg_url() -> Any:
    url = asyncio.run(_reset_pg_database())
    if url is None:
        message = f"PostgreSQL is not reachable at {PG_ADMIN_URL}"
        if IN_CI:
            pytest.fail(f"{message}; CI requires the PostgreSQL tests to run")
        pytest.skip(message)
    yield url
    asyncio.run(_drop_pg_database())


async def _clean_pg(url: str) -> None:
    conn = await asyncpg.connect(_dsn(url))
    try:
        tables = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'alembic_version'"
        )
        if tables:
            names = ", ".join(f'public."{t["tablename"]}"' for t in tables)
            await conn.execute(f"TRUNCATE {names} CASCADE")
        schemas = await conn.fetch(
            "SELECT nspname FROM pg_namespace WHERE nspname NOT IN ('public', 'information_schema') "
            "AND nspname NOT LIKE 'pg\\_%'"
        )
        for row in schemas:
            await conn.execute(f'DROP SCHEMA "{row["nspname"]}" CASCADE')
    finally:
        await conn.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'tsm.sqlite3'}"
        return
    url = request.getfixturevalue("pg_url")
    asyncio.run(_clean_pg(url))
    yield url


def make_settings(db_url: str, storage: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": db_url,
        "storage_dir": storage,
        "poll_interval": 0.05,
        "progress_interval": 0.05,
        "lease_seconds": 2.0,
        "shutdown_grace_seconds": 2.0,
        "retry_backoff_seconds": 0.05,
        "kind_modules": ["tests.kinds"],
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return make_settings(db_url, tmp_path / "storage")


@contextlib.asynccontextmanager
async def open_app(settings: Settings, **overrides: Any) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """Run the app's lifespan and give an in-process client; ``overrides`` change settings."""
    app = create_app(settings.model_copy(update=overrides) if overrides else settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://tsm.test") as client:
            yield app, client


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


async def wait_for(
    client: httpx.AsyncClient,
    task_id: str,
    predicate: Callable[[dict[str, Any]], bool],
    *,
    timeout: float = 20.0,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Poll the task until ``predicate`` holds (or fail after ``timeout`` seconds)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        response = await client.get(f"/tasks/{task_id}", headers=headers)
        assert response.status_code == 200, response.text
        task = response.json()
        if predicate(task):
            return task
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting; task is {task}")
        await asyncio.sleep(0.02)


async def wait_state(client: httpx.AsyncClient, task_id: str, *states: str, **kwargs: Any) -> dict[str, Any]:
    return await wait_for(client, task_id, lambda t: t["state"] in states, **kwargs)
