"""Three replicas that share nothing but PostgreSQL and one bucket, each with its own directory.

    A (API only) ── upload, every control request, the Range download
    B (worker)   ── runs the import; paused through A, resumed through B, then killed -9
    C (worker)   ── started after B died: finishes the import from its checkpoint, runs the export

The import must hold exactly the source rows, the export must be the table as CSV, and no
replica's directory may hold a byte of either file.
"""

from __future__ import annotations

import asyncio
import base64
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from tests.helpers.database import dsn
from tests.helpers.imports import SCHEMA, csv_rows
from tests.helpers.s3 import S3Server, store_settings
from tests.helpers.server import LiveServer, poll_task
from tests.helpers.tus import OCTET, TUS

ROWS = 40_000
HEADER = b"id,name,amount,note\n"


def _env(s3_server: S3Server) -> dict[str, str]:
    values = store_settings(s3_server, prefix=f"shared-{uuid.uuid4().hex[:8]}")
    return {f"TSM_{name.upper()}": str(value) for name, value in values.items()}


def _upload(server: LiveServer, data: bytes) -> str:
    metadata = f"filename {base64.b64encode(b'sales.csv').decode()}"
    created = httpx.post(
        f"{server.url}/files", headers={**TUS, "Upload-Length": str(len(data)), "Upload-Metadata": metadata}
    )
    assert created.status_code == 201, created.text
    location = created.headers["location"]
    done = httpx.patch(location, headers={**OCTET, "Upload-Offset": "0"}, content=data, timeout=60)
    assert done.status_code == 204, done.text
    return location.rsplit("/", 1)[1]


def _control(server: LiveServer, task_id: str, action: str) -> None:
    response = httpx.post(f"{server.url}/tasks/{task_id}/{action}", timeout=10)
    assert response.status_code in (200, 202), response.text


def _runs_on(task: dict[str, Any], server: LiveServer) -> bool:
    assert server.process is not None
    return task["state"] == "running" and f":{server.process.pid}:" in (task["runner"] or "")


def _files_in(folder: Path) -> list[Path]:
    return [p for p in (folder / "files").rglob("*") if p.is_file()] if (folder / "files").exists() else []


async def _table_ids(db_url: str, table: str) -> list[int]:
    conn = await asyncpg.connect(dsn(db_url))
    try:
        return [r["id"] for r in await conn.fetch(f'SELECT id FROM "{SCHEMA}"."{table}" ORDER BY id')]
    finally:
        await conn.close()


def test_three_replicas_share_only_the_database_and_the_bucket(pg_url: str, s3_server: S3Server, tmp_path: Path):
    env = _env(s3_server)
    data = HEADER + csv_rows(ROWS)
    table = f"shared_{uuid.uuid4().hex[:8]}"
    small_batches = {"TSM_IMPORT_BATCH_BYTES": "32768"}  # many checkpoints: room to pause and to kill
    dirs = {name: tmp_path / name for name in "abc"}
    a = LiveServer(pg_url, dirs["a"], TSM_MAX_CONCURRENT_TASKS="0", **env).start()
    b = LiveServer(pg_url, dirs["b"], **small_batches, **env).start()
    c = LiveServer(pg_url, dirs["c"], **small_batches, **env)
    try:
        file_id = _upload(a, data)
        started = httpx.post(
            f"{a.url}/tasks", json={"kind": "import_csv", "params": {"file_id": file_id, "table": table}}
        )
        assert started.status_code == 201, started.text
        task_id = started.json()["id"]

        poll_task(a, task_id, lambda t: _runs_on(t, b) and t["progress"]["done"] > 0)
        _control(a, task_id, "pause")  # B runs it; A only writes the request
        paused = poll_task(b, task_id, lambda t: t["state"] == "paused")
        assert 0 < paused["checkpoint"]["rows"] < ROWS
        _control(b, task_id, "resume")
        poll_task(a, task_id, lambda t: _runs_on(t, b) and t["progress"]["done"] > paused["progress"]["done"])
        b.kill()  # mid-batch, no goodbye: its lease lapses and C takes over

        c.start()
        done = poll_task(a, task_id, lambda t: t["state"] == "succeeded", timeout=120)
        assert done["result"]["rows"] == ROWS and done["attempts"] >= 2
        assert asyncio.run(_table_ids(pg_url, table)) == list(range(1, ROWS + 1))  # each row exactly once

        exported = httpx.post(f"{a.url}/tasks", json={"kind": "export_csv", "params": {"table": table}})
        assert exported.status_code == 201, exported.text
        result = poll_task(a, exported.json()["id"], lambda t: t["state"] == "succeeded")["result"]  # C runs it
        download = f"{a.url}/files/{result['file_id']}"
        whole = httpx.get(download, timeout=60)
        assert whole.status_code == 200
        lines = whole.content.splitlines()
        assert len(lines) == ROWS + 1 and lines[0] == b"id,name,amount,note"
        # in the table's physical order: parallel COPY streams store batches as they commit
        assert sorted(int(line.split(b",", 1)[0]) for line in lines[1:]) == list(range(1, ROWS + 1))
        part = httpx.get(download, headers={"Range": "bytes=100-199"})
        assert part.status_code == 206 and part.content == whole.content[100:200]

        for name, folder in dirs.items():  # the bytes live in the bucket only
            assert _files_in(folder) == [], f"replica {name} kept file bytes locally"
    finally:
        for server in (a, b, c):
            server.kill()
