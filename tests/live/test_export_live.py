"""export_csv on a real server: SIGKILL mid-export, restart (on S3: another server with a directory
of its own continues the same multipart upload), and the file is byte-identical."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers.apps import make_settings
from tests.helpers.exports import PAGE_ROWS, Tables, expected_csv
from tests.helpers.s3 import S3Server, client_kwargs, store_settings
from tests.helpers.server import LiveServer

ROWS = 400


def wait_task(client: httpx.Client, task_id: str, predicate: Any, timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        task = client.get(f"/tasks/{task_id}").json()
        if predicate(task):
            return task
        assert time.monotonic() < deadline, f"timed out; task is {task}"
        time.sleep(0.01)


def export(client: httpx.Client) -> str:
    response = client.post("/tasks", json={"kind": "export_csv", "params": {"table": "people"}})
    assert response.status_code == 201, response.text
    return response.json()["id"]


@pytest.mark.parametrize("parallel", [1, 3])
def test_crash_mid_export_then_restart_gives_identical_bytes(db_url: str, tmp_path: Path, parallel: int) -> None:
    """Killed with ``parallel`` pages in flight, restarted with another number of streams."""
    storage = tmp_path / "storage"
    settings = make_settings(db_url, storage)
    rows = asyncio.run(Tables(settings).people(count=ROWS))
    expected = expected_csv(["id", "name", "note", "qty"], rows)
    server = LiveServer(db_url, storage, TSM_EXPORT_PAGE_ROWS=PAGE_ROWS, TSM_EXPORT_PARALLEL=parallel)
    with server, httpx.Client(base_url=server.url, timeout=10) as client:
        task_id = export(client)
        at_kill = wait_task(
            client,
            task_id,
            lambda t: t["state"] not in ("queued", "running") or t["progress"]["done"] >= 10 * PAGE_ROWS,
        )
        server.kill()
    assert at_kill["state"] == "running" and at_kill["progress"]["done"] < at_kill["progress"]["total"], at_kill
    # Bytes a dying runner wrote past its last checkpoint must not survive the restart.
    partial = storage / "files" / at_kill["checkpoint"]["file_id"]
    with partial.open("ab") as handle:
        handle.write(b"half a page from the dead runner\n")

    restarted = LiveServer(db_url, storage, TSM_EXPORT_PAGE_ROWS=PAGE_ROWS, TSM_EXPORT_PARALLEL=4 - parallel)
    with restarted, httpx.Client(base_url=restarted.url, timeout=10) as client:
        task = wait_task(client, task_id, lambda t: t["state"] in ("succeeded", "failed"))
        assert task["state"] == "succeeded", task
        assert task["result"]["file_id"] == at_kill["checkpoint"]["file_id"]
        assert partial.read_bytes() == expected
        download = client.get(task["result"]["download"])
        assert download.status_code == 200 and download.content == expected
        assert task["result"]["rows"] == len(rows)


WIDE_ROWS = 2400  # about 12 MiB: two parts of the multipart upload and a tail
WIDE_PAGE_ROWS = 60


def _wide(settings: Any) -> bytes:
    rows = [(i, f"{i:06d} " + "x" * 5000) for i in range(1, WIDE_ROWS + 1)]
    asyncio.run(
        Tables(settings).execute(
            "local",
            'CREATE TABLE {s}"wide" (id integer PRIMARY KEY, filler text)',
            rows=rows,
            insert='INSERT INTO {s}"wide" VALUES ({marks})',
        )
    )
    return expected_csv(["id", "filler"], rows)


async def _s3_scribble(server: S3Server, bucket_key: str, multipart: dict[str, Any]) -> None:
    """What the killed runner could have stored after its last checkpoint: a part under the next
    number and a tail segment, neither in the checkpoint's list."""
    from aiobotocore.session import get_session

    async with get_session().create_client("s3", **client_kwargs(server)) as s3:
        number = len(multipart["parts"]) + 1
        await s3.upload_part(
            Bucket=server.bucket, Key=bucket_key, UploadId=multipart["upload_id"], PartNumber=number, Body=b"dead" * 9
        )
        await s3.put_object(Bucket=server.bucket, Key=f"{bucket_key}.tail-dead", Body=b"half a page\n")


async def _s3_leftovers(server: S3Server, key: str) -> list[str]:
    from aiobotocore.session import get_session

    async with get_session().create_client("s3", **client_kwargs(server)) as s3:
        uploads = await s3.list_multipart_uploads(Bucket=server.bucket, Prefix=key)
        objects = await s3.list_objects_v2(Bucket=server.bucket, Prefix=key)
    return [u["Key"] for u in uploads.get("Uploads", [])] + [o["Key"] for o in objects.get("Contents", [])]


def test_kill_mid_export_to_s3_then_another_server_continues_the_same_upload(
    db_url: str, tmp_path: Path, s3_server: S3Server
) -> None:
    on_s3 = store_settings(s3_server)
    prefix = on_s3["storage_url"].split("/", 3)[3]
    env = {f"TSM_{name.upper()}": value for name, value in on_s3.items()}
    settings = make_settings(db_url, tmp_path / "a")
    expected = _wide(settings)
    server = LiveServer(db_url, tmp_path / "a", TSM_EXPORT_PAGE_ROWS=WIDE_PAGE_ROWS, **env)
    with server, httpx.Client(base_url=server.url, timeout=10) as client:
        response = client.post("/tasks", json={"kind": "export_csv", "params": {"table": "wide"}})
        assert response.status_code == 201, response.text
        task_id = response.json()["id"]
        at_kill = wait_task(
            client,
            task_id,
            lambda t: (
                t["state"] not in ("queued", "running")
                or bool(((t["checkpoint"] or {}).get("multipart") or {}).get("parts"))
            ),
            timeout=60,
        )
        server.kill()
    checkpoint = at_kill["checkpoint"]
    assert at_kill["state"] == "running" and checkpoint["rows"] < WIDE_ROWS, at_kill
    key = f"{prefix}/files/{checkpoint['file_id']}"
    asyncio.run(_s3_scribble(s3_server, key, checkpoint["multipart"]))

    # On PostgreSQL another server, with a directory of its own: the bucket and the database are
    # all it shares. (SQLite is embedded: its tables live in the directory, so the same one restarts.)
    directory = tmp_path / ("a" if db_url.startswith("sqlite") else "b")
    other = LiveServer(db_url, directory, TSM_EXPORT_PAGE_ROWS=WIDE_PAGE_ROWS, **env)
    with other, httpx.Client(base_url=other.url, timeout=30) as client:
        task = wait_task(client, task_id, lambda t: t["state"] in ("succeeded", "failed"), timeout=120)
        assert task["state"] == "succeeded", task["error"]
        assert task["result"]["file_id"] == checkpoint["file_id"] and task["result"]["rows"] == WIDE_ROWS
        download = client.get(task["result"]["download"])
        assert download.status_code == 200 and download.content == expected
        ranged = client.get(task["result"]["download"], headers={"Range": "bytes=6000000-6000099"})
        assert ranged.status_code == 206 and ranged.content == expected[6_000_000:6_000_100]
    assert asyncio.run(_s3_leftovers(s3_server, key)) == [key]  # one object; no upload, no tail left
