"""Every terminal failure runs the kind's cleanup: a final error, a runner lost on the last
attempt (kill -9 of a real server mid-import and mid-export), and a crash during the cleanup
itself. Nothing is left behind, and the owner's limits are free again (both databases)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from sqlalchemy import select, update

from app.models import Task, TaskEvent
from app.services.runtime.leases import RUNNER_LOST
from tests.helpers.apps import make_settings, wait_for, wait_state
from tests.helpers.database import dsn
from tests.helpers.exports import Tables
from tests.helpers.imports import SCHEMA, ImportEnv, import_env, list_tables, read_rows, write_csv
from tests.helpers.server import LiveServer, poll
from tests.helpers.tus import TUS

__all__ = ["import_env"]  # the `env` fixture


def fail_then_clean(name: str) -> dict[str, Any]:
    return {"kind": "fail_then_clean", "params": {"name": name}, "max_attempts": 1}


async def states_of(app: Any, task_id: str) -> list[str]:
    async with app.state.database.sessionmaker() as session:
        rows = await session.execute(select(TaskEvent.state).where(TaskEvent.task_id == task_id).order_by(TaskEvent.id))
        return list(rows.scalars())


async def test_a_final_error_runs_the_cleanup_once_then_fails_with_the_error(app, client, settings):
    (settings.storage_dir / "release-once").touch()
    task_id = (await client.post("/tasks", json=fail_then_clean("once"))).json()["id"]
    failed = await wait_state(client, task_id, "failed")
    assert failed["error"] == "once failed on purpose" and failed["finished_at"] is not None
    assert not (settings.storage_dir / "made-once").exists()
    assert (settings.storage_dir / "cleanups-once").read_text() == "cleanup\n"
    assert await states_of(app, task_id) == ["queued", "running", "failing", "failed"]


async def test_a_failing_task_answers_409_to_every_control_request(client, settings):
    task_id = (await client.post("/tasks", json=fail_then_clean("held"))).json()["id"]
    failing = await wait_state(client, task_id, "failing")
    assert failing["error"] == "held failed on purpose"
    for action in ("pause", "resume", "cancel"):
        response = await client.post(f"/tasks/{task_id}/{action}")
        assert response.status_code == 409, response.text
        assert response.json()["current_state"] == "failing"
    listed = (await client.get("/tasks", params={"state": "failing"})).json()["items"]
    assert [t["id"] for t in listed] == [task_id]
    (settings.storage_dir / "release-held").touch()
    await wait_state(client, task_id, "failed")
    assert not (settings.storage_dir / "made-held").exists()


async def test_a_runner_lost_on_the_last_attempt_is_cleaned_up(app, client, settings):
    body = {"kind": "marker", "params": {"name": "lost", "step_seconds": 0.02}, "max_attempts": 1}
    task_id = (await client.post("/tasks", json=body)).json()["id"]
    await wait_for(client, task_id, lambda t: t["progress"]["done"] >= 1)
    assert (settings.storage_dir / "marker-lost").exists()
    async with app.state.database.sessionmaker.begin() as session:  # as if its runner vanished
        await session.execute(update(Task).where(Task.id == task_id).values(lease_token="stolen"))
    failed = await wait_state(client, task_id, "failed", timeout=30)
    assert failed["error"] == RUNNER_LOST
    assert not (settings.storage_dir / "marker-lost").exists()
    assert (await states_of(app, task_id))[-2:] == ["failing", "failed"]


async def test_a_non_data_error_on_the_last_attempt_drops_the_staging_table(env: ImportEnv):
    write_csv(env.storage / "big.csv", 5000)
    body = {"kind": "import_csv", "params": {"path": "big.csv", "table": "big"}, "max_attempts": 1}
    task_id = (await env.client.post("/tasks", json=body)).json()["id"]
    await wait_for(env.client, task_id, lambda t: t["progress"]["done"] > 0)
    assert (await env.client.post(f"/tasks/{task_id}/pause")).status_code == 202
    await wait_state(env.client, task_id, "paused")
    (staging,) = await env.tables()
    rename = f'ALTER TABLE {{}}"{staging}" RENAME COLUMN "name" TO "renamed"'  # the next batch fails on it
    if env.postgres:
        conn = await asyncpg.connect(dsn(env.db_url))
        try:
            await conn.execute(rename.format(f'"{SCHEMA}".'))
        finally:
            await conn.close()
    else:
        with sqlite3.connect(env.storage / "tables" / "local.sqlite3") as db:
            db.execute(rename.format(""))
    assert (await env.client.post(f"/tasks/{task_id}/resume")).status_code == 202
    failed = await wait_state(env.client, task_id, "failed")
    assert failed["error"] and failed["attempts"] == 1
    assert await env.tables() == []


# --- real servers, killed -------------------------------------------------------------------


def get_task(server: LiveServer, task_id: str) -> dict[str, Any]:
    response = httpx.get(f"{server.url}/tasks/{task_id}", timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def wait_task(server: LiveServer, task_id: str, predicate: Any, timeout: float = 60.0) -> dict[str, Any]:
    return poll(lambda: (task := get_task(server, task_id)) and predicate(task) and task, timeout=timeout, what=task_id)


def start(server: LiveServer, body: dict[str, Any]) -> str:
    response = httpx.post(f"{server.url}/tasks", json=body, timeout=10)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def files(server: LiveServer) -> list[dict[str, Any]]:
    return httpx.get(f"{server.url}/files", params={"limit": 200}, timeout=10).json()["items"]


def test_a_crash_during_the_cleanup_is_finished_by_the_next_runner(db_url: str, tmp_path: Path) -> None:
    storage = tmp_path / "storage"
    with LiveServer(db_url, storage) as server:
        task_id = start(server, fail_then_clean("crash"))
        wait_task(server, task_id, lambda t: t["state"] == "failing")
        poll(lambda: (storage / "cleanups-crash").exists(), what="the first cleanup")
        server.kill()  # in the middle of the cleanup
    (storage / "release-crash").touch()
    with LiveServer(db_url, storage) as again:
        failed = wait_task(again, task_id, lambda t: t["state"] == "failed")
    assert failed["error"] == "crash failed on purpose"
    assert not (storage / "made-crash").exists()
    assert (storage / "cleanups-crash").read_text() == "cleanup\ncleanup\n"


def test_kill_on_the_last_attempt_of_an_import_leaves_nothing(db_url: str, tmp_path: Path) -> None:
    storage = tmp_path / "storage"
    storage.mkdir()
    count = 60_000
    source = write_csv(storage / "big.csv", count)
    with source.open("r+b") as handle:  # a record that misses its declared type: a reject file
        lines = handle.read().split(b"\n")
        lines[1500] = b"not a number,x,1,y"
        handle.seek(0)
        handle.write(b"\n".join(lines))
    settings = make_settings(db_url, storage)
    quota = 10_000_000
    env = {"TSM_IMPORT_BATCH_BYTES": 16384, "TSM_MAX_STORAGE_BYTES_PER_OWNER": quota}
    columns = [{"name": "id", "type": "bigint"}, {"name": "name"}, {"name": "amount"}, {"name": "note"}]
    params = {"path": "big.csv", "table": "big", "on_error": "skip", "columns": columns}
    with LiveServer(db_url, storage, **env) as server:
        task_id = start(server, {"kind": "import_csv", "params": params, "max_attempts": 1})
        size = source.stat().st_size
        at_kill = wait_task(
            server, task_id, lambda t: t["state"] not in ("queued", "running") or t["progress"]["done"] > size / 4
        )
        assert at_kill["state"] == "running", at_kill
        rejects = poll(lambda: next((f for f in files(server) if f["origin"] == "rejects"), None), what="rejects")
        staging = asyncio.run(list_tables(db_url, settings))
        assert len(staging) == 1 and staging[0].startswith("tsm_import_"), staging
        assert asyncio.run(read_rows(db_url, settings, staging[0])), "the staging table has rows"
        still = get_task(server, task_id)
        assert still["state"] == "running", still
        server.kill()
    assert (storage / "files" / rejects["id"]).exists()
    with LiveServer(db_url, storage, **env) as again:
        failed = wait_task(again, task_id, lambda t: t["state"] in ("failed", "succeeded"))
        assert (failed["state"], failed["error"]) == ("failed", RUNNER_LOST)
        assert asyncio.run(list_tables(db_url, settings)) == []
        assert files(again) == [] and not (storage / "files" / rejects["id"]).exists()
        assert httpx.delete(f"{again.url}/files/{rejects['id']}", headers=TUS).status_code == 404
        # The owner's quota counts nothing of it any more.
        assert httpx.post(f"{again.url}/files", headers={**TUS, "Upload-Length": str(quota)}).status_code == 201
        assert [t["state"] for t in httpx.get(f"{again.url}/tasks").json()["items"]] == ["failed"]


def test_kill_on_the_last_attempt_of_an_export_leaves_nothing(db_url: str, tmp_path: Path) -> None:
    storage = tmp_path / "storage"
    settings = make_settings(db_url, storage)
    asyncio.run(Tables(settings).people(count=5000))  # pages of 5 rows: long enough to be caught
    quota = 100_000
    env = {"TSM_EXPORT_PAGE_ROWS": 5, "TSM_MAX_STORAGE_BYTES_PER_OWNER": quota}
    with LiveServer(db_url, storage, **env) as server:
        task_id = start(server, {"kind": "export_csv", "params": {"table": "people"}, "max_attempts": 1})
        at_kill = wait_task(
            server, task_id, lambda t: t["state"] not in ("queued", "running") or t["progress"]["done"] >= 50
        )
        assert at_kill["state"] == "running", at_kill
        file_id = at_kill["checkpoint"]["file_id"]
        assert [(f["id"], f["state"]) for f in files(server)] == [(file_id, "writing")]
        assert httpx.delete(f"{server.url}/files/{file_id}", headers=TUS).status_code == 409
        server.kill()
    partial = storage / "files" / file_id
    assert partial.stat().st_size > 0
    with LiveServer(db_url, storage, **env) as again:
        failed = wait_task(again, task_id, lambda t: t["state"] in ("failed", "succeeded"))
        assert (failed["state"], failed["error"]) == ("failed", RUNNER_LOST), failed
        assert not partial.exists() and files(again) == []
        assert httpx.get(f"{again.url}/files/{file_id}/info").status_code == 404
        assert httpx.delete(f"{again.url}/files/{file_id}", headers=TUS).status_code == 404
        # The whole quota is free again.
        assert httpx.post(f"{again.url}/files", headers={**TUS, "Upload-Length": str(quota)}).status_code == 201
