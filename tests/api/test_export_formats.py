"""PostgreSQL's export SELECT writes timestamps as Python's ``isoformat`` does (plan.py), both ways
it can (from the text under DateStyle ISO, or with to_char): at the edges, and the two ways agree
on many values, including years Python has no datetime for."""

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
    datetime(1999, 12, 31, 23, 59, 59, 10),
    datetime(9999, 12, 31, 23, 59, 59, 999_999),
]
TYPES = ("timestamp without time zone", "timestamp with time zone")


@pytest.fixture
async def conn(db_url: str) -> asyncpg.Connection:
    if db_url.startswith("sqlite"):
        pytest.skip("the SQL expressions are PostgreSQL's")
    conn = await asyncpg.connect(dsn(db_url))
    await conn.execute("SET TimeZone = 'America/New_York'")  # the output is UTC whatever the session's zone
    yield conn
    await conn.close()


@pytest.mark.parametrize("iso_dates", [False, True])
async def test_timestamps_print_as_isoformat(conn: asyncpg.Connection, iso_dates: bool) -> None:
    plain, zoned = (canonical("v", t, iso_dates) for t in TYPES)
    for moment in MOMENTS:
        # Sent as text: asyncpg would send datetime.min as -infinity.
        text = moment.isoformat()
        assert await conn.fetchval(f"SELECT {plain} FROM (SELECT $1::text::timestamp AS v) s", text) == text
        text = moment.replace(tzinfo=UTC).isoformat()
        assert await conn.fetchval(f"SELECT {zoned} FROM (SELECT $1::text::timestamptz AS v) s", text) == text
    for infinite in ("infinity", "-infinity"):
        for sql in (plain, zoned):
            assert await conn.fetchval(f"SELECT {sql} FROM (SELECT '{infinite}'::timestamptz AS v) s") == infinite


@pytest.mark.parametrize("sql_type", TYPES)
async def test_the_iso_text_and_to_char_agree(conn: asyncpg.Connection, sql_type: str) -> None:
    # 20,000 values from 2874 BC to 16,630 AD, most with a fraction, some on the second.
    values = (
        "SELECT CAST(timestamp '2000-01-01' + (g - 5000) * interval '356.123457 days' "
        "+ CASE WHEN g % 3 = 0 THEN interval '0' ELSE g * interval '0.000011 seconds' END "
        f"AS {sql_type}) AS v FROM generate_series(1, 20000) AS g"
    )
    fast, slow = canonical("v", sql_type, True), canonical("v", sql_type, False)
    rows = await conn.fetch(f"SELECT v::text, {fast} AS fast, {slow} AS slow FROM ({values}) s")
    assert len(rows) == 20000 and sum(r["fast"].endswith("000000") for r in rows) < 20000
    assert [r for r in rows if r["fast"] != r["slow"]] == []
    assert any(r["v"].endswith(" BC") for r in rows) and any(len(r["v"].split("-")[0]) == 5 for r in rows)
