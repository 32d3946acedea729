"""export_csv on a real server: SIGKILL mid-export, restart, and the file is byte-identical."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx

from tests.helpers.apps import make_settings
from tests.helpers.exports import PAGE_ROWS, Tables, expected_csv
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


def test_crash_mid_export_then_restart_gives_identical_bytes(db_url: str, tmp_path: Path) -> None:
    storage = tmp_path / "storage"
    settings = make_settings(db_url, storage)
    rows = asyncio.run(Tables(settings).people(count=ROWS))
    expected = expected_csv(["id", "name", "note", "qty"], rows)
    server = LiveServer(db_url, storage, TSM_EXPORT_PAGE_ROWS=PAGE_ROWS)
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

    restarted = LiveServer(db_url, storage, TSM_EXPORT_PAGE_ROWS=PAGE_ROWS)
    with restarted, httpx.Client(base_url=restarted.url, timeout=10) as client:
        task = wait_task(client, task_id, lambda t: t["state"] in ("succeeded", "failed"))
        assert task["state"] == "succeeded", task
        assert task["result"]["file_id"] == at_kill["checkpoint"]["file_id"]
        assert partial.read_bytes() == expected
        download = client.get(task["result"]["download"])
        assert download.status_code == 200 and download.content == expected
        assert task["result"]["rows"] == len(rows)
