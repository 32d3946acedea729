"""The PostgreSQL side of the suite: one database per test session, cleaned between tests.

PostgreSQL comes from ``TSM_TEST_PG_URL`` (default: the local server, database ``test``); the
suite works in its own database beside it, named after the process so parallel runs never meet.
"""

from __future__ import annotations

import os

import asyncpg
from sqlalchemy.engine import make_url

PG_ADMIN_URL = os.environ.get("TSM_TEST_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
PG_TEST_DB = f"tsm_pytest_{os.getpid()}"
IN_CI = os.environ.get("CI", "").lower() == "true"


def dsn(url: str, database: str | None = None) -> str:
    parsed = make_url(url).set(drivername="postgresql")
    if database is not None:
        parsed = parsed.set(database=database)
    return parsed.render_as_string(hide_password=False)


async def reset_pg_database() -> str | None:
    """Recreate the test database; returns its SQLAlchemy URL, or None if PostgreSQL is down."""
    try:
        conn = await asyncpg.connect(dsn(PG_ADMIN_URL), timeout=5)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return None
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{PG_TEST_DB}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{PG_TEST_DB}"')
    finally:
        await conn.close()
    return make_url(PG_ADMIN_URL).set(database=PG_TEST_DB).render_as_string(hide_password=False)


async def drop_pg_database() -> None:
    conn = await asyncpg.connect(dsn(PG_ADMIN_URL), timeout=5)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{PG_TEST_DB}" WITH (FORCE)')
    finally:
        await conn.close()


async def clean_pg(url: str) -> None:
    conn = await asyncpg.connect(dsn(url))
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
