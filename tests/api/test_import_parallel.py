"""Parallel COPY on PostgreSQL: N streams, a ledger of committed ranges, exactly once.

Batches here are tiny (8 KiB) and records span two lines (a quoted newline), so a file of a
few hundred KiB is dozens of batches committed out of order by three streams."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy import update

from app.models import Task
from app.services.csv_import.params import staging_name
from tests.helpers.apps import wait_for, wait_state
from tests.helpers.database import clean_pg, dsn
from tests.helpers.imports import SCHEMA, ImportEnv, _env, start

COUNT = 12_000
HEADER = b"id,note,n\n"


def record(i: int) -> bytes:
    return f'{i},"note {i}\nsecond line, ""{i}""",{i * 3}\n'.encode()


def content(count: int = COUNT) -> bytes:
    return HEADER + b"".join(record(i) for i in range(1, count + 1))


@pytest.fixture(name="env")
async def parallel_env(pg_url: str, tmp_path: Path) -> AsyncIterator[ImportEnv]:
    await clean_pg(pg_url)
    async for env in _env(pg_url, tmp_path, 8192, {"import_parallel": 3}):
        yield env


async def assert_exactly_once(env: ImportEnv, table: str, count: int = COUNT) -> None:
    conn = await asyncpg.connect(dsn(env.db_url))
    try:
        rows = await conn.fetch(f'SELECT id, note, n FROM {SCHEMA}."{table}"')
    finally:
        await conn.close()
    ids = sorted(int(r["id"]) for r in rows)
    assert ids == list(range(1, count + 1)), f"{len(ids)} rows, {len(set(ids))} distinct"
    assert all(r["note"] == f'note {r["id"]}\nsecond line, "{r["id"]}"' and r["n"] == 3 * r["id"] for r in rows)


async def test_many_pauses_lose_and_double_nothing(env: ImportEnv):
    data = content()
    source = await env.source("p.csv", data)
    task_id = (await start(env.client, **source, table="paused_often")).json()["id"]
    rng, seen = random.Random(7), 0.0
    for _ in range(8):
        step = rng.uniform(0.03, 0.09) * len(data)
        task = await wait_for(
            env.client,
            task_id,
            lambda t, at=seen + step: t["progress"]["done"] >= at or t["state"] in ("succeeded", "failed"),
        )
        if task["state"] == "succeeded":
            break
        paused = await env.client.post(f"/tasks/{task_id}/pause")
        if paused.status_code == 409 and paused.json()["current_state"] == "succeeded":
            break  # it finished between the look and the pause
        assert paused.status_code == 202, paused.text
        paused = await wait_state(env.client, task_id, "paused", "succeeded")
        if paused["state"] == "succeeded":
            break
        ledger = paused["checkpoint"]
        assert paused["progress"]["done"] == ledger["offset"] + sum(e - s for s, e, _ in ledger.get("loaded", []))
        seen = paused["progress"]["done"]
        assert (await env.client.post(f"/tasks/{task_id}/resume")).status_code == 202
    done = await wait_state(env.client, task_id, "succeeded", "failed", timeout=60)
    assert done["state"] == "succeeded", done
    assert done["result"]["rows"] == COUNT and done["result"]["streams"] == 3
    assert done["checkpoint"]["loaded"] == [] and done["checkpoint"]["offset"] == len(data)
    await assert_exactly_once(env, "paused_often")


async def test_a_resume_loads_exactly_the_ranges_the_ledger_lacks(env: ImportEnv):
    """A checkpoint with a gap (range [a, b) missing, [b, X) committed) as a crash between
    out-of-order commits leaves it: the resume fills the gap and goes on after X, once each."""
    data = content()
    source = await env.source("g.csv", data)
    task_id = (await start(env.client, **source, table="gapped")).json()["id"]
    await wait_for(env.client, task_id, lambda t: t["progress"]["done"] >= 0.4 * len(data), timeout=30)
    await env.client.post(f"/tasks/{task_id}/pause")
    paused = await wait_state(env.client, task_id, "paused")
    state: dict[str, Any] = paused["checkpoint"]
    assert state["rows"] > 2_000, state
    # Records are numbered from 1 after the header: find where record k starts.
    starts = [len(HEADER)]
    for i in range(1, COUNT + 1):
        starts.append(starts[-1] + len(record(i)))
    first_missing, first_kept = 300, 900  # [a, b): records 300..899 vanish with their ledger entry
    a, b = starts[first_missing - 1], starts[first_kept - 1]
    assert b < state["offset"], state
    conn = await asyncpg.connect(dsn(env.db_url))
    try:
        staging = f'{SCHEMA}."{staging_name(task_id)}"'
        deleted = await conn.execute(f"DELETE FROM {staging} WHERE id >= $1 AND id < $2", first_missing, first_kept)
        assert deleted == f"DELETE {first_kept - first_missing}"
    finally:
        await conn.close()
    gap = {
        **state,
        "offset": a,
        "line": 2 + 2 * (first_missing - 1),  # two lines a record after the header's one
        "rows": state["rows"] - (first_kept - first_missing),
        "loaded": sorted([[b, state["offset"], data.count(b"\n", b, state["offset"])], *state.get("loaded", [])]),
    }
    async with env.app.state.database.sessionmaker.begin() as session:
        await session.execute(update(Task).where(Task.id == task_id).values(checkpoint=gap))
    assert (await env.client.post(f"/tasks/{task_id}/resume")).status_code == 202
    done = await wait_state(env.client, task_id, "succeeded", "failed", timeout=60)
    assert done["state"] == "succeeded", done
    assert done["result"]["rows"] == COUNT
    await assert_exactly_once(env, "gapped")


async def test_a_bad_record_fails_the_import_and_stops_every_stream(env: ImportEnv):
    data = content(4_000).replace(record(3_100), b'3100,"broken",not-a-number\n')
    source = await env.source("bad.csv", data)
    columns = [{"name": "id", "type": "bigint"}, {"name": "note", "type": "text"}, {"name": "n", "type": "bigint"}]
    task_id = (await start(env.client, **source, table="never", columns=columns)).json()["id"]
    failed = await wait_state(env.client, task_id, "failed", "succeeded", timeout=60)
    assert failed["state"] == "failed" and "line 6200" in failed["error"] and "not-a-number" in failed["error"], failed
    assert await env.tables() == []


async def test_one_stream_is_the_sequential_load(pg_url: str, tmp_path: Path):
    await clean_pg(pg_url)
    async for env in _env(pg_url, tmp_path, 8192, {"import_parallel": 1}):
        source = await env.source("one.csv", content(3_000))
        done = await env.run(**source, table="one")
        assert done["state"] == "succeeded" and done["result"]["streams"] == 1, done
        await assert_exactly_once(env, "one", 3_000)
