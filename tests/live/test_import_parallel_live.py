"""kill -9 of a server in the middle of a parallel import, again and again: every row once.

Three COPY streams commit 16 KiB batches out of order, so a kill usually leaves a ledger with
ranges beyond the unbroken run; each restart (a new process, a new lease) loads what is missing."""

from __future__ import annotations

import asyncio
import json
import random
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from tests.helpers.database import clean_pg, dsn
from tests.helpers.imports import SCHEMA
from tests.helpers.server import LiveServer

COUNT = 40_000
KILLS = 5


def source(count: int) -> bytes:
    body = b"".join(f'{i},"line one {i}\nline two ""{i}""",{i % 97}\n'.encode() for i in range(1, count + 1))
    return b"id,note,n\n" + body


async def table_rows(url: str, table: str) -> list[Any]:
    conn = await asyncpg.connect(dsn(url))
    try:
        return list(await conn.fetch(f'SELECT id, note FROM {SCHEMA}."{table}"'))
    finally:
        await conn.close()


async def checkpoint(url: str, task_id: str) -> dict[str, Any]:
    """The checkpoint as the killed runner left it."""
    conn = await asyncpg.connect(dsn(url))
    try:
        value = await conn.fetchval("SELECT checkpoint FROM tasks WHERE id = $1", task_id)
    finally:
        await conn.close()
    return (json.loads(value) if isinstance(value, str) else value) or {}


def poll(url: str, task_id: str, until: Any, timeout: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        task = httpx.get(f"{url}/tasks/{task_id}").json()
        if until(task) or task["state"] in ("succeeded", "failed") or time.monotonic() > deadline:
            return task
        time.sleep(0.01)


@pytest.mark.slow
def test_kill_9_at_random_moments_of_a_parallel_import(pg_url: str, tmp_path: Path):
    asyncio.run(clean_pg(pg_url))
    storage = tmp_path / "storage"
    storage.mkdir()
    data = source(COUNT)
    (storage / "par.csv").write_bytes(data)
    env = {"TSM_IMPORT_BATCH_BYTES": "16384", "TSM_LEASE_SECONDS": "1", "TSM_IMPORT_PARALLEL": "3"}
    rng = random.Random(11)
    task_id, kills, gaps = None, 0, 0
    for round_ in range(KILLS + 1):
        with LiveServer(pg_url, storage, **env) as server:
            if task_id is None:
                params = {"path": "par.csv", "table": "killed", "infer_types": False}
                task = {"kind": "import_csv", "params": params, "max_attempts": KILLS + 2}
                response = httpx.post(f"{server.url}/tasks", json=task)
                assert response.status_code == 201, response.text
                task_id = response.json()["id"]
            if round_ == KILLS:
                task = poll(server.url, task_id, lambda t: False)
                break
            target = (round_ + rng.random()) / (KILLS + 1) * len(data)
            task = poll(
                server.url, task_id, lambda t, at=target: t["state"] == "running" and t["progress"]["done"] >= at
            )
            if task["state"] != "running":
                break
            server.kill()
            kills += 1
        gaps += bool(asyncio.run(checkpoint(pg_url, task_id)).get("loaded"))
    print(f"{gaps} of {kills} kills left ranges beyond the unbroken run")
    assert kills >= 3, "the import finished before it could be killed: make the file bigger"
    assert task["state"] == "succeeded", (task, f"{gaps} of {kills} kills left ranges beyond the run")
    assert task["result"]["rows"] == COUNT and task["result"]["streams"] == 3
    rows = asyncio.run(table_rows(pg_url, "killed"))
    assert sorted(int(r["id"]) for r in rows) == list(range(1, COUNT + 1))
    assert all(r["note"] == f'line one {r["id"]}\nline two "{r["id"]}"' for r in rows)
