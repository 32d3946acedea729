"""PostgreSQL's export SELECT writes timestamps as Python's ``isoformat`` does (plan.py), at the
edges too: the first and last years, whole seconds, one microsecond, infinities."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg
import pytest

from app.services.csv_export.source_pg import canonical
from tests.helpers.database import dsn

MOMENTS = [
    datetime(1, 1, 1),
    datetime(99, 12, 31, 23, 59, 59, 999_999),
    datetime(2024, 2, 29, 23, 59, 59, 500_000),
    datetime(2024, 2, 29, 23, 59, 59),
    datetime(2000, 1, 1, 0, 0, 0, 1),
    datetime(9999, 12, 31, 23, 59, 59),
]


async def test_timestamps_print_as_isoformat(db_url: str) -> None:
    if db_url.startswith("sqlite"):
        pytest.skip("the SQL expression is PostgreSQL's")
    conn = await asyncpg.connect(dsn(db_url))
    try:
        await conn.execute("SET TimeZone = 'America/New_York'")  # the output is UTC whatever the session's zone
        plain = canonical("v", "timestamp without time zone")
        zoned = canonical("v", "timestamp with time zone")
        for moment in MOMENTS:
            # Sent as text: asyncpg would send datetime.min as -infinity.
            text = moment.isoformat()
            assert await conn.fetchval(f"SELECT {plain} FROM (SELECT $1::text::timestamp AS v) s", text) == text
            text = moment.replace(tzinfo=UTC).isoformat()
            assert await conn.fetchval(f"SELECT {zoned} FROM (SELECT $1::text::timestamptz AS v) s", text) == text
        for infinite in ("infinity", "-infinity"):
            for sql in (plain, zoned):
                assert await conn.fetchval(f"SELECT {sql} FROM (SELECT '{infinite}'::timestamptz AS v) s") == infinite
    finally:
        await conn.close()
