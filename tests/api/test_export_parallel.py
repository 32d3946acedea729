"""export_csv with several pages COPYed at once (``export_parallel``, PostgreSQL): the bytes of one
stream, whatever the number of streams, across pauses; one snapshot per run, and nothing left
running once a run stops. (SQLite ignores the setting: the same tests check it still agrees.)"""

from __future__ import annotations

import contextlib
from pathlib import Path

import asyncpg
import pytest

from app.config import Settings
from app.services.csv_export.plan import ExportPlan
from app.services.csv_export.source_pg import PgSource
from app.services.owners.namespaces import owner_schema
from app.services.runtime.bus import asyncpg_dsn
from tests.api.test_exports import export, exported_bytes, pause_resume_until_done, start
from tests.helpers.apps import make_settings, open_app
from tests.helpers.exports import NASTY, PAGE_ROWS, Tables, expected_csv


def _settings(db_url: str, tmp_path: Path, parallel: int) -> Settings:
    return make_settings(db_url, tmp_path / "storage", export_page_rows=PAGE_ROWS, export_parallel=parallel)


async def _three_kinds(tables: Tables) -> dict[str, bytes]:
    """An integer key, a text key and no key (physical order): each pages its own way."""
    people = await tables.people(count=300)
    labels = [(f'key {i:04d} ✓, "{i}"', i, NASTY[i % len(NASTY)]) for i in range(200)]
    await tables.execute(
        "local",
        'CREATE TABLE {s}"labels" (label text NOT NULL PRIMARY KEY, n integer, note text)',
        rows=list(reversed(labels)),
        insert='INSERT INTO {s}"labels" VALUES ({marks})',
    )
    heap = [(i % 13, f"{'x' * 700} {i}") for i in range(300)]  # ~30 heap blocks
    await tables.execute(
        "local",
        'CREATE TABLE {s}"heap" (n integer, filler text)',
        rows=heap,
        insert='INSERT INTO {s}"heap" VALUES ({marks})',
    )
    return {
        "people": expected_csv(["id", "name", "note", "qty"], people),
        "labels": expected_csv(["label", "n", "note"], sorted(labels)),
        "heap": expected_csv(["n", "filler"], heap),
    }


async def test_three_streams_write_the_bytes_of_one(db_url: str, tmp_path: Path) -> None:
    settings = _settings(db_url, tmp_path, 1)
    expected = await _three_kinds(Tables(settings))
    written: dict[tuple[int, str], bytes] = {}
    for parallel in (1, 3):
        async with open_app(settings, export_parallel=parallel) as (_app, client):
            for table in expected:
                _task, written[parallel, table] = await export(client, settings, table=table)
    for table, data in expected.items():
        assert written[1, table] == data, table
        assert written[3, table] == data, table


async def test_pause_resume_with_three_streams_gives_identical_bytes(db_url: str, tmp_path: Path) -> None:
    settings = _settings(db_url, tmp_path, 3)
    tables = Tables(settings)
    rows = await tables.people(count=600)  # 123 pages of 5 rows: pauses land mid-way
    expected = expected_csv(["id", "name", "note", "qty"], rows)
    async with open_app(settings) as (app, client):
        task = await pause_resume_until_done(client, (await start(client, table="people"))["id"], settings, app)
        assert await exported_bytes(client, task) == expected
        assert task["result"]["rows"] == len(rows)


async def _export_sessions(conn: asyncpg.Connection) -> int:
    return int(
        await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name = 'tsm-export'"
        )
    )


async def test_one_run_reads_one_snapshot_and_stopping_ends_every_stream(db_url: str, tmp_path: Path) -> None:
    if db_url.startswith("sqlite"):
        pytest.skip("snapshots and parallel streams are PostgreSQL's")
    settings = _settings(db_url, tmp_path, 3)
    rows = await Tables(settings).people(count=100)
    dsn = asyncpg_dsn(settings.effective_database_url)
    table = f'"{owner_schema(settings, "local")}"."people"'
    other = await asyncpg.connect(dsn)
    source = await PgSource.open(dsn, owner_schema(settings, "local"), ExportPlan(table="people"), PAGE_ROWS, None, 3)
    try:
        pages = source.pages(None, PAGE_ROWS)
        chunks: list[bytes] = []
        async with contextlib.aclosing(pages):
            first = await anext(pages)
            chunks += first.chunks
            assert await _export_sessions(other) == 4  # the planning connection and three streams
            # Changed after the run's snapshot, in pages not yet planned: none of it shows.
            await other.execute(f"DELETE FROM {table} WHERE id = 90")
            await other.execute(f"UPDATE {table} SET note = 'changed' WHERE id = 60")
            await other.execute(f"INSERT INTO {table} VALUES (1000, 'late', 'late', 1)")
            async for page in pages:
                chunks += page.chunks
        assert b"".join(chunks) == expected_csv(None, rows)

        # Stopped mid-way (as a pause stops it), with COPYs in flight: nothing keeps running.
        again = source.pages(None, PAGE_ROWS)
        await anext(again)
        await again.aclose()
    finally:
        await source.close()
    try:
        assert await _export_sessions(other) == 0
    finally:
        await other.close()
