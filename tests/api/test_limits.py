"""Owner limits hold under parallel requests (a real server, both databases); the storage quota
holds for uploads of unknown length and for exports; an empty upload is complete, hash included,
at once."""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from app.services.files.storage import file_path
from tests.helpers.apps import open_app, wait_state
from tests.helpers.exports import Tables, file_rows
from tests.helpers.server import LiveServer, poll
from tests.helpers.tus import OCTET, TUS, get_row, new_upload, patch

PARALLEL = 50
LONG_TASK = {"kind": "process", "params": {"steps": 100_000, "step_seconds": 0.05}}


async def _parallel(server: LiveServer, requests: list[tuple[str, str, dict[str, Any]]]) -> Counter[int]:
    """Send every request at once; count the answers by status."""
    limits = httpx.Limits(max_connections=PARALLEL)
    async with httpx.AsyncClient(base_url=server.url, timeout=60, limits=limits) as client:
        answers = await asyncio.gather(*(client.request(method, url, **kw) for method, url, kw in requests))
    for answer in answers:
        assert answer.status_code < 500, answer.text
    return Counter(answer.status_code for answer in answers)


def _create_upload(length: int) -> tuple[str, str, dict[str, Any]]:
    return ("POST", "/files", {"headers": {**TUS, "Upload-Length": str(length)}})


def _active(server: LiveServer) -> int:
    tasks = httpx.get(f"{server.url}/tasks", params={"limit": 200}, timeout=10).json()["items"]
    return sum(t["state"] in ("queued", "running", "pausing", "cancelling", "failing") for t in tasks)


def test_parallel_task_creates_and_resumes_never_pass_the_active_task_limit(db_url: str, tmp_path: Path) -> None:
    limit = 5
    with LiveServer(db_url, tmp_path / "storage", TSM_MAX_ACTIVE_TASKS_PER_OWNER=limit) as server:
        paused = []
        for _ in range(2):  # ten paused tasks (paused ones are not active), made five at a time
            batch = [httpx.post(f"{server.url}/tasks", json=LONG_TASK).json()["id"] for _ in range(limit)]
            for task_id in batch:
                assert httpx.post(f"{server.url}/tasks/{task_id}/pause").status_code == 202
            for task_id in batch:
                poll(lambda t=task_id: httpx.get(f"{server.url}/tasks/{t}").json()["state"] == "paused")
            paused += batch
        requests = [("POST", f"/tasks/{task_id}/resume", {}) for task_id in paused]
        requests += [("POST", "/tasks", {"json": LONG_TASK})] * (PARALLEL - len(paused))
        answers = await_(_parallel(server, requests))
        assert answers[201] + answers[202] == limit, answers
        assert answers[429] == PARALLEL - limit, answers
        assert _active(server) == limit


async def test_two_resumes_of_one_task_at_the_limit_are_both_harmless(settings):
    async with open_app(settings, max_active_tasks_per_owner=1) as (_app, client):
        task_id = (await client.post("/tasks", json=LONG_TASK)).json()["id"]
        await client.post(f"/tasks/{task_id}/pause")
        await wait_state(client, task_id, "paused")
        for _ in range(3):
            answers = await asyncio.gather(*(client.post(f"/tasks/{task_id}/resume") for _ in range(2)))
            assert [a.status_code for a in answers] == [202, 202], [a.text for a in answers]
            await client.post(f"/tasks/{task_id}/pause")
            await wait_state(client, task_id, "paused")
        assert (await client.post("/tasks", json=LONG_TASK)).status_code == 201
        assert (await client.post(f"/tasks/{task_id}/resume")).status_code == 429


def test_parallel_upload_creates_never_pass_the_open_upload_limit(db_url: str, tmp_path: Path) -> None:
    limit = 20
    with LiveServer(db_url, tmp_path / "storage", TSM_MAX_OPEN_UPLOADS_PER_OWNER=limit) as server:
        answers = await_(
            _parallel(server, [("POST", "/files", {"headers": {**TUS, "Upload-Length": "10"}})] * PARALLEL)
        )
        assert answers == {201: limit, 429: PARALLEL - limit}, answers
        listed = httpx.get(f"{server.url}/files", params={"state": "uploading", "limit": 200}).json()["items"]
        assert len(listed) == limit


def test_parallel_upload_creates_never_pass_the_storage_quota(db_url: str, tmp_path: Path) -> None:
    env = {"TSM_MAX_OPEN_UPLOADS_PER_OWNER": 100, "TSM_MAX_STORAGE_BYTES_PER_OWNER": 1000}
    with LiveServer(db_url, tmp_path / "storage", **env) as server:
        answers = await_(
            _parallel(server, [("POST", "/files", {"headers": {**TUS, "Upload-Length": "100"}})] * PARALLEL)
        )
        assert answers == {201: 10, 413: PARALLEL - 10}, answers


def await_(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


async def test_a_deferred_length_patch_keeps_only_the_bytes_the_quota_allows(settings):
    quota = 1 << 20
    async with open_app(settings, max_storage_bytes_per_owner=quota) as (app, client):
        url = await new_upload(client, None, Upload_Defer_Length="1")
        response = await patch(client, url, 0, b"x" * (3 << 20))
        assert response.status_code == 413, response.text
        assert "storage quota exceeded" in response.json()["detail"]
        offset = int((await client.head(url, headers=TUS)).headers["upload-offset"])
        assert offset <= quota
        file_id = url.rsplit("/", 1)[1]
        assert file_path(settings, file_id).stat().st_size == offset
        # Within the quota, the upload goes on and can be finished.
        rest = quota - offset
        done = await client.patch(
            url, headers={**OCTET, "Upload-Offset": str(offset), "Upload-Length": str(quota)}, content=b"y" * rest
        )
        assert done.status_code == 204, done.text
        row = await get_row(app, file_id)
        assert row is not None and (row.state, row.offset, row.length) == ("complete", quota, quota)
        # Declaring more than the quota allows is refused before a byte is written.
        other = await new_upload(client, None, Upload_Defer_Length="1")
        refused = await client.patch(other, headers={**OCTET, "Upload-Offset": "0", "Upload-Length": "1"}, content=b"z")
        assert refused.status_code == 413 and "storage quota exceeded" in refused.json()["detail"]


async def test_two_deferred_length_patches_at_once_share_the_quota(settings):
    quota = 1 << 20
    async with open_app(settings, max_storage_bytes_per_owner=quota) as (_app, client):
        urls = [await new_upload(client, None, Upload_Defer_Length="1") for _ in range(2)]
        answers = await asyncio.gather(*(patch(client, url, 0, b"x" * quota) for url in urls))
        assert sorted(a.status_code for a in answers) in ([204, 413], [413, 413]), [a.text for a in answers]
        offsets = [int((await client.head(url, headers=TUS)).headers["upload-offset"]) for url in urls]
        assert sum(offsets) <= quota, offsets


async def test_a_zero_byte_upload_has_its_sha256_at_creation(client):
    response = await client.post("/files", headers={**TUS, "Upload-Length": "0"})
    assert response.status_code == 201
    file_id = response.headers["location"].rsplit("/", 1)[1]
    info = (await client.get(f"/files/{file_id}/info")).json()
    assert (info["state"], info["sha256"]) == ("complete", hashlib.sha256(b"").hexdigest())


async def test_an_export_past_the_storage_quota_fails_and_leaves_no_file(settings):
    quota = 4000
    async with open_app(settings, max_storage_bytes_per_owner=quota, export_page_rows=5) as (app, client):
        await Tables(settings).people(count=400)  # about 10 kB of CSV
        upload_id = (await new_upload(client, 1000)).rsplit("/", 1)[1]  # counts with its declared length
        body = {"kind": "export_csv", "params": {"table": "people"}, "max_attempts": 3}
        task_id = (await client.post("/tasks", json=body)).json()["id"]
        failed = await wait_state(client, task_id, "failed", "succeeded")
        assert failed["state"] == "failed", failed
        assert failed["error"].startswith("storage quota exceeded: "), failed["error"]
        assert failed["attempts"] == 1, "a full quota is not retried"
        assert await file_rows(app, task_id) == []
        assert [p.name for p in (settings.storage_dir / "files").iterdir()] == [upload_id]
        # An export that fits is written, and counted.
        small = {"kind": "export_csv", "params": {"table": "people", "columns": ["id"]}}
        done = await wait_state(client, (await client.post("/tasks", json=small)).json()["id"], "succeeded", "failed")
        assert done["state"] == "succeeded", done
        free = quota - 1000 - done["result"]["bytes"]
        assert (await client.post("/files", headers={**TUS, "Upload-Length": str(free + 1)})).status_code == 413
        assert (await client.post("/files", headers={**TUS, "Upload-Length": str(free)})).status_code == 201
