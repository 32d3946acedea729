"""An import's reject file in the configured store (local directory, S3), across pauses: its
bytes are exactly those of an uninterrupted import, whatever a run wrote after its checkpoint."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.config import Settings
from app.services.csv_import.rejects import rejects_file_id
from tests.helpers.apps import open_app, wait_for, wait_state
from tests.helpers.tus import s3_leftovers

pytestmark = pytest.mark.parametrize("store", ["local", "s3"], indirect=True)

ROWS = 3000
COLUMNS = [{"name": "id", "type": "bigint"}, {"name": "v", "type": "bigint"}]
GARBAGE = b"GARBAGE,NOT,A,REJECT\r\n"


def source() -> bytes:
    lines = ["id,v"] + [f"{i},{'oops ' + str(i) if i % 7 == 0 else i * 2}" for i in range(1, ROWS + 1)]
    return ("\n".join(lines) + "\n").encode()


async def start(client: httpx.AsyncClient, name: str, table: str) -> str:
    params = {"path": name, "table": table, "on_error": "skip", "columns": COLUMNS}
    response = await client.post("/tasks", json={"kind": "import_csv", "params": params})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def scribble(app: FastAPI, settings: Settings, task_id: str, checkpoint: dict[str, Any]) -> None:
    """What a run killed after its checkpoint could have left behind: none of it may count."""
    file_id = rejects_file_id(task_id)
    if app.state.store.local:
        path = settings.storage_dir / "files" / file_id
        assert path.stat().st_size >= checkpoint["reject_bytes"]
        with path.open("ab") as handle:
            handle.write(GARBAGE)
        return
    multipart = checkpoint["reject_multipart"]
    assert (
        sum(s["size"] for s in multipart["segments"]) + sum(p["size"] for p in multipart["parts"])
        == (checkpoint["reject_bytes"])
    )
    store = app.state.store
    await store.upload_part(file_id, multipart["upload_id"], len(multipart["parts"]) + 1, GARBAGE)
    await store.put_tail(file_id, GARBAGE)


async def test_reject_file_is_byte_identical_after_pauses(settings: Settings):
    async with open_app(settings, import_batch_bytes=1024) as (app, client):
        (settings.storage_dir / "rej.csv").write_bytes(source())
        reference = await wait_state(client, await start(client, "rej.csv", "plain"), "succeeded", "failed")
        assert reference["state"] == "succeeded", reference
        assert reference["result"]["rejected"] == ROWS // 7
        expected = (await client.get(f"/files/{reference['result']['reject_file_id']}")).content
        assert expected.startswith(b"line,column,error,record\r\n") and expected.count(b"\r\n") == ROWS // 7 + 1

        task_id = await start(client, "rej.csv", "paused")
        paused_mid = 0
        seen = 0
        for _ in range(3):
            task = await wait_for(
                client,
                task_id,
                lambda t, s=seen: t["state"] == "succeeded" or (t["checkpoint"] or {}).get("rejects", 0) > s,
            )
            if task["state"] == "succeeded":
                break
            await client.post(f"/tasks/{task_id}/pause")
            task = await wait_state(client, task_id, "paused", "succeeded")
            if task["state"] == "succeeded":
                break
            checkpoint = task["checkpoint"]
            if checkpoint["reject_bytes"]:
                paused_mid += 1
                await scribble(app, settings, task_id, checkpoint)
            seen = checkpoint["rejects"]
            assert (await client.post(f"/tasks/{task_id}/resume")).status_code == 202
        assert paused_mid >= 1, "the import finished before it could be paused with rejects"
        task = await wait_state(client, task_id, "succeeded", "failed")
        assert task["state"] == "succeeded", task
        file_id = task["result"]["reject_file_id"]
        download = await client.get(f"/files/{file_id}")
        assert download.status_code == 200 and download.content == expected
        ranged = await client.get(f"/files/{file_id}", headers={"Range": "bytes=5-24"})
        assert ranged.status_code == 206 and ranged.content == expected[5:25]
        info = (await client.get(f"/files/{file_id}/info")).json()
        assert (info["state"], info["origin"], info["length"]) == ("complete", "rejects", len(expected))
        if not app.state.store.local:  # one object: no open upload, no tail segment left
            assert await s3_leftovers(app, file_id) == [app.state.store.key(file_id)]


async def test_cancel_removes_the_reject_file_from_the_store(settings: Settings):
    async with open_app(settings, import_batch_bytes=1024) as (app, client):
        (settings.storage_dir / "rej.csv").write_bytes(source())
        task_id = await start(client, "rej.csv", "gone")
        await wait_for(client, task_id, lambda t: (t["checkpoint"] or {}).get("reject_bytes", 0) > 0)
        await client.post(f"/tasks/{task_id}/pause")
        await wait_state(client, task_id, "paused")
        file_id = rejects_file_id(task_id)
        if not app.state.store.local:
            assert await s3_leftovers(app, file_id)
        assert (await client.post(f"/tasks/{task_id}/cancel")).status_code == 202
        await wait_state(client, task_id, "cancelled")
        assert (await client.get(f"/files/{file_id}/info")).status_code == 404
        if app.state.store.local:
            assert not (settings.storage_dir / "files" / file_id).exists()
        else:
            assert await s3_leftovers(app, file_id) == []
