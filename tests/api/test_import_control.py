"""import_csv under pause / resume / cancel / crash: every source row exactly once, or nothing."""

from __future__ import annotations

import asyncio
import random
import time

import httpx
import pytest

from tests.helpers.apps import wait_for, wait_state
from tests.helpers.imports import (
    BOTH_STORES,
    ImportEnv,
    csv_rows,
    import_env,
    import_env_8k,
    list_tables,
    read_rows,
    start,
    write_csv,
)
from tests.helpers.server import LiveServer

__all__ = ["import_env", "import_env_8k"]  # the `env` and `env8k` fixtures

ROWS = 20_000


def expected(count: int) -> list[tuple[str, ...]]:
    return [(str(i), f"name {i}, quoted", str(i * 0.25), f"row {i}") for i in range(1, count + 1)]


def in_file_order(rows: list[tuple[str, ...]], postgres: bool) -> list[tuple[str, ...]]:
    """SQLite keeps file order (rowid); PostgreSQL's physical order can differ between batches
    committed by different pooled connections, so there the ids put the rows back in order."""
    return sorted(rows, key=lambda r: int(r[0])) if postgres else rows


@BOTH_STORES
async def test_pause_resume_many_times_mid_file(env8k: ImportEnv):
    """On S3 the source is an upload in the bucket: each resume goes on from the checkpoint's
    byte offset with ranged GETs, and the table holds exactly the source rows."""
    env = env8k
    content = b"id,name,amount,note\n" + csv_rows(ROWS)
    source = await env.source("big.csv", content)
    response = await start(env.client, **source, table="big", infer_types=False)
    assert response.status_code == 201, response.text
    task_id = response.json()["id"]
    total = len(content)
    seen = 0.0
    for _ in range(3):
        await wait_for(env.client, task_id, lambda t, s=seen: t["progress"]["done"] > s + 20_000, timeout=30)
        assert (await env.client.post(f"/tasks/{task_id}/pause")).status_code == 202
        paused = await wait_state(env.client, task_id, "paused")
        offset = paused["checkpoint"]["offset"]
        assert 0 < offset < total, paused["checkpoint"]
        ledger = paused["checkpoint"].get("loaded", [])  # ranges parallel streams committed beyond it
        assert paused["progress"]["done"] == offset + sum(end - begin for begin, end, _ in ledger)
        assert paused["checkpoint"]["rows"] > 0
        assert await env.tables() == [f"tsm_import_{task_id.replace('-', '')}"]  # target not visible yet
        await asyncio.sleep(0.1)  # a paused task stays put
        again = (await env.client.get(f"/tasks/{task_id}")).json()
        assert again["checkpoint"] == paused["checkpoint"] and again["state"] == "paused"
        seen = offset
        assert (await env.client.post(f"/tasks/{task_id}/resume")).status_code == 202
    done = await wait_state(env.client, task_id, "succeeded", "failed", timeout=60)
    assert done["state"] == "succeeded", done
    assert done["result"]["rows"] == ROWS
    assert in_file_order(await env.rows("big"), env.postgres) == expected(ROWS)
    assert await env.tables() == ["big"]


async def test_cancel_leaves_nothing(env: ImportEnv):
    content = b"id,v\n1,x\n" + b"".join(f"{i},{i}\n".encode() for i in range(2, ROWS))
    env.put("c.csv", content)
    columns = [{"name": "id", "type": "bigint"}, {"name": "v", "type": "bigint"}]
    response = await start(env.client, path="incoming/c.csv", table="gone", on_error="skip", columns=columns)
    task_id = response.json()["id"]
    running = await wait_for(env.client, task_id, lambda t: (t["checkpoint"] or {}).get("rejects", 0) > 0)
    assert running["state"] in ("running", "succeeded")
    assert (await env.client.post(f"/tasks/{task_id}/pause")).status_code == 202
    await wait_state(env.client, task_id, "paused")
    files = (await env.client.get("/files", params={"task_id": task_id})).json()["items"]
    assert len(files) == 1 and files[0]["origin"] == "rejects"
    assert (await env.client.post(f"/tasks/{task_id}/cancel")).status_code == 202
    await wait_state(env.client, task_id, "cancelled")
    assert await env.tables() == []
    assert (await env.client.get("/files", params={"task_id": task_id})).json()["items"] == []
    assert not list((env.storage / "files").iterdir())


async def test_cancel_while_running(env: ImportEnv):
    write_csv(env.storage / "r.csv", ROWS)
    task_id = (await start(env.client, path="r.csv", table="gone2")).json()["id"]
    await wait_for(env.client, task_id, lambda t: t["progress"]["done"] > 10_000)
    assert (await env.client.post(f"/tasks/{task_id}/cancel")).status_code == 202
    task = await wait_state(env.client, task_id, "cancelled", "succeeded")
    assert task["state"] == "cancelled"
    assert await env.tables() == []


@BOTH_STORES
async def test_changed_source_refuses_to_resume(env: ImportEnv):
    content = b"id,name,amount,note\n" + csv_rows(ROWS)
    source = await env.source("m.csv", content)
    task_id = (await start(env.client, **source, table="moved")).json()["id"]
    await wait_for(env.client, task_id, lambda t: t["progress"]["done"] > 10_000)
    await env.client.post(f"/tasks/{task_id}/pause")
    await wait_state(env.client, task_id, "paused")
    changed = content + b"99999999,late,1,row\n"
    if env.on_s3:  # the object is replaced (uploads never are, but a bucket can be written)
        store = env.app.state.store
        await store._call("put_object", Key=store.key(source["file_id"]), Body=changed)
    else:
        (env.storage / source["path"]).write_bytes(changed)
    await env.client.post(f"/tasks/{task_id}/resume")
    task = await wait_state(env.client, task_id, "failed", "succeeded")
    assert task["state"] == "failed" and "source file changed" in task["error"], task
    assert await env.tables() == []


@pytest.mark.slow
def test_crash_mid_import_repeatedly_is_exactly_once(db_url, tmp_path):
    storage = tmp_path / "storage"
    storage.mkdir()
    count = 60_000
    write_csv(storage / "crash.csv", count)
    rng = random.Random(5)
    env = {"TSM_IMPORT_BATCH_BYTES": "16384", "TSM_LEASE_SECONDS": "1"}
    kills = 0
    task_id = None
    settings = None
    for round_ in range(3):
        with LiveServer(db_url, storage, **env) as server:
            if task_id is None:
                params = {"path": "crash.csv", "table": "crashed", "infer_types": False}
                response = httpx.post(f"{server.url}/tasks", json={"kind": "import_csv", "params": params})
                assert response.status_code == 201, response.text
                task_id = response.json()["id"]
            deadline = time.monotonic() + 60
            target = rng.uniform(0.2, 0.35) * (round_ + 1) * (storage / "crash.csv").stat().st_size
            while time.monotonic() < deadline:
                task = httpx.get(f"{server.url}/tasks/{task_id}").json()
                if task["state"] in ("succeeded", "failed") or (round_ < 2 and task["progress"]["done"] >= target):
                    break
                time.sleep(0.02)
            if round_ < 2 and task["state"] == "running":
                server.kill()
                kills += 1
            elif round_ == 2:
                while task["state"] not in ("succeeded", "failed") and time.monotonic() < deadline:
                    time.sleep(0.05)
                    task = httpx.get(f"{server.url}/tasks/{task_id}").json()
                break
    assert kills >= 2, "the import finished before it could be killed: make the file bigger"
    assert task["state"] == "succeeded", task
    assert task["result"]["rows"] == count
    from tests.helpers.apps import make_settings

    settings = make_settings(db_url, storage)
    rows = asyncio.run(read_rows(db_url, settings, "crashed"))
    assert len(rows) == count
    assert in_file_order(rows, not db_url.startswith("sqlite")) == expected(count)
    assert asyncio.run(list_tables(db_url, settings)) == ["crashed"]
