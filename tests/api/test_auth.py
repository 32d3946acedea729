"""Owners, API keys and isolation."""

from __future__ import annotations

import hmac
import subprocess
import sys

import pytest

from app.services.owners import keys
from tests.helpers.apps import open_app, wait_state
from tests.helpers.server import ROOT

STEADY = {"kind": "marker", "params": {"name": "owned", "step_seconds": 0.05}}


async def make_key(app, owner: str, role: str = "user") -> dict[str, str]:
    async with app.state.database.sessionmaker.begin() as session:
        _row, full_key = await keys.create_key(session, owner, role)
    return {"Authorization": f"Bearer {full_key}"}


@pytest.fixture
async def secured(settings):
    async with open_app(settings, auth_required=True) as (app, client):
        yield app, client


async def test_missing_key_is_401_with_bearer_challenge(secured):
    _app, client = secured
    response = await client.get("/tasks")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["title"] == "Unauthorized"
    assert (await client.get("/healthz")).status_code == 200  # probes stay open


@pytest.mark.parametrize(
    "header",
    [
        "Bearer",
        "Bearer ",
        "Basic dXNlcjpwYXNz",
        "Token abc",
        "Bearer tsm_000000000000_thisisnotarealsecretatall",
        "Bearer not-even-shaped-like-a-key",
        "Bearer a b c",
        "tsm_abc",
    ],
)
async def test_malformed_or_wrong_keys_are_401(secured, header):
    _app, client = secured
    response = await client.get("/tasks", headers={"Authorization": header})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


async def test_a_sent_key_is_checked_even_when_auth_is_optional(client):
    response = await client.get("/tasks", headers={"Authorization": "Bearer tsm_000000000000_" + "x" * 40})
    assert response.status_code == 401


async def test_owners_never_see_or_touch_each_others_tasks(secured):
    app, client = secured
    alice, bob = await make_key(app, "alice"), await make_key(app, "bob")
    admin = await make_key(app, "root", "admin")

    response = await client.post("/tasks", json=STEADY, headers=alice)
    assert response.status_code == 201
    task = response.json()
    assert task["owner"] == "alice"
    task_id = task["id"]
    await wait_state(client, task_id, "running", headers=alice)

    for method, path in [
        ("GET", f"/tasks/{task_id}"),
        ("GET", f"/tasks/{task_id}/events"),
        ("POST", f"/tasks/{task_id}/pause"),
        ("POST", f"/tasks/{task_id}/resume"),
        ("POST", f"/tasks/{task_id}/cancel"),
    ]:
        response = await client.request(method, path, headers=bob)
        assert response.status_code == 404, (method, path)
        assert response.json()["detail"] == f"no task with id {task_id!r}"  # same words as a missing id
    assert (await client.get("/tasks", headers=bob)).json()["items"] == []
    assert [t["id"] for t in (await client.get("/tasks", headers=alice)).json()["items"]] == [task_id]
    assert (await client.get(f"/tasks/{task_id}", headers=alice)).json()["state"] == "running"

    # an admin sees everything and may act on any task
    assert [t["id"] for t in (await client.get("/tasks", headers=admin)).json()["items"]] == [task_id]
    assert (await client.post(f"/tasks/{task_id}/cancel", headers=admin)).status_code == 202
    await wait_state(client, task_id, "cancelled", headers=alice)


async def test_revoked_key_stops_working_at_once(secured):
    app, client = secured
    headers = await make_key(app, "carol")
    assert (await client.get("/tasks", headers=headers)).status_code == 200
    key_id = headers["Authorization"].split("_")[1]
    async with app.state.database.sessionmaker.begin() as session:
        await keys.revoke_key(session, key_id)
    response = await client.get("/tasks", headers=headers)
    assert response.status_code == 401
    assert response.json()["detail"] == "Invalid or revoked API key."


async def test_key_comparison_is_constant_time_on_every_path(secured, monkeypatch):
    """Unknown id, wrong secret and a good key all go through hmac.compare_digest."""
    app, client = secured
    good = await make_key(app, "dave")
    key_id = good["Authorization"].split("_")[1]
    calls: list[int] = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append(1)
        return real(a, b)

    monkeypatch.setattr(keys.hmac, "compare_digest", spy)
    for header in (
        f"Bearer tsm_{key_id}_{'w' * 43}",
        f"Bearer tsm_ffffffffffff_{'w' * 43}",
        good["Authorization"],
        "Bearer garbage",
    ):
        await client.get("/tasks", headers={"Authorization": header})
    assert len(calls) == 4


async def test_keys_are_stored_only_as_hashes(secured):
    app, _client = secured
    headers = await make_key(app, "erin")
    full_key = headers["Authorization"].removeprefix("Bearer ")
    async with app.state.database.sessionmaker() as session:
        rows = await keys.list_keys(session)
    stored = " ".join(f"{r.id} {r.secret_hash}" for r in rows)
    assert full_key.split("_", 2)[2] not in stored
    assert len(rows[0].secret_hash) == 64


@pytest.mark.parametrize("owner", ["", "Alice", "1abc", "a-b", "../x", "a" * 33, "bob;drop"])
async def test_bad_owner_names_are_refused(secured, owner):
    app, _client = secured
    async with app.state.database.sessionmaker.begin() as session:
        with pytest.raises(keys.Unprocessable):
            await keys.create_key(session, owner)


async def test_active_task_limit_per_owner_is_429(settings):
    async with open_app(settings, max_active_tasks_per_owner=2, max_concurrent_tasks=1) as (_app, client):
        ids = [(await client.post("/tasks", json=STEADY)).json()["id"] for _ in range(2)]
        response = await client.post("/tasks", json=STEADY)
        assert response.status_code == 429
        assert "limit 2" in response.json()["detail"]
        await client.post(f"/tasks/{ids[0]}/cancel")
        await wait_state(client, ids[0], "cancelled")
        assert (await client.post("/tasks", json=STEADY)).status_code == 201
        for task_id in ids[1:]:
            await client.post(f"/tasks/{task_id}/cancel")


def test_keys_command_line(tmp_path):
    env = {"TSM_STORAGE_DIR": str(tmp_path / "storage"), "PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "app", *args], env=env, capture_output=True, text=True, cwd=tmp_path
        )

    created = run("keys", "create", "frank", "--admin")
    assert created.returncode == 0, created.stderr
    full_key = created.stdout.strip().splitlines()[-1]
    assert keys.KEY_PATTERN.fullmatch(full_key)
    key_id = full_key.split("_")[1]
    listed = run("keys", "list")
    assert key_id in listed.stdout and "admin" in listed.stdout and full_key not in listed.stdout
    assert run("keys", "revoke", key_id).returncode == 0
    assert "revoked" in run("keys", "list").stdout
    again = run("keys", "revoke", key_id)
    assert again.returncode == 1 and "no active key" in again.stderr
    bad = run("keys", "create", "Not Valid")
    assert bad.returncode == 1 and "owner" in bad.stderr


def test_without_auth_the_server_binds_to_loopback_only(tmp_path):
    from app.cli import bind_plan
    from tests.helpers.apps import make_settings

    open_settings = make_settings("", tmp_path, host="0.0.0.0", workers=4)
    host, workers, warnings = bind_plan(open_settings)
    assert (host, workers) == ("127.0.0.1", 1)
    assert any("authentication is off" in w for w in warnings)

    secured = make_settings("postgresql+asyncpg://db/x", tmp_path, host="0.0.0.0", workers=4, auth_required=True)
    assert bind_plan(secured) == ("0.0.0.0", 4, [])


async def test_files_imports_and_exports_are_owned(secured):
    """Alice's upload, import and export are invisible to Bob on every endpoint that names them."""
    app, client = secured
    alice, bob = await make_key(app, "alice"), await make_key(app, "bob")
    tus = {"Tus-Resumable": "1.0.0"}
    body = b"id,name\n1,ann\n2,bo\n"
    created = await client.post("/files", headers={**alice, **tus, "Upload-Length": str(len(body))})
    assert created.status_code == 201, created.text
    file_id = created.headers["location"].rstrip("/").rsplit("/", 1)[-1]
    patch = {**alice, **tus, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"}
    assert (await client.patch(f"/files/{file_id}", content=body, headers=patch)).status_code == 204

    bob_patch = {**patch, **bob}
    for method, path, extra in [
        ("HEAD", f"/files/{file_id}", tus),
        ("PATCH", f"/files/{file_id}", {"Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"}),
        ("DELETE", f"/files/{file_id}", tus),
        ("GET", f"/files/{file_id}", {}),
        ("GET", f"/files/{file_id}/info", {}),
    ]:
        headers = {**bob, **extra} if method != "PATCH" else bob_patch
        response = await client.request(method, path, headers=headers, content=b"x" if method == "PATCH" else None)
        assert response.status_code == 404, (method, path, response.status_code)
    assert (await client.get("/files", headers=bob)).json()["items"] == []
    assert (await client.get(f"/files/{file_id}", headers=alice)).content == body

    # Bob cannot import Alice's upload...
    stolen = {"kind": "import_csv", "params": {"file_id": file_id, "table": "people"}}
    assert (await client.post("/tasks", json=stolen, headers=bob)).status_code == 404
    # ...Alice can, and both may own a table of the same name.
    task = (await client.post("/tasks", json=stolen, headers=alice)).json()
    assert (await wait_state(client, task["id"], "succeeded", "failed", headers=alice))["state"] == "succeeded"
    assert (
        await client.post("/tasks", json={"kind": "export_csv", "params": {"table": "people"}}, headers=bob)
    ).status_code == 404
    bobs = await client.post("/files", headers={**bob, **tus, "Upload-Length": "9", "Upload-Metadata": ""})
    bobs_id = bobs.headers["location"].rstrip("/").rsplit("/", 1)[-1]
    bob_upload = {**bob_patch, "Tus-Resumable": "1.0.0"}
    assert (await client.patch(f"/files/{bobs_id}", content=b"id\n7\n8\n9\n", headers=bob_upload)).status_code == 204
    mine = {"kind": "import_csv", "params": {"file_id": bobs_id, "table": "people"}}
    bobs_task = (await client.post("/tasks", json=mine, headers=bob)).json()
    assert (await wait_state(client, bobs_task["id"], "succeeded", "failed", headers=bob))["result"]["rows"] == 3
    own = {"kind": "import_csv", "params": {"path": "../../etc/passwd", "table": "people"}}
    assert (await client.post("/tasks", json=own, headers=bob)).status_code == 422

    export = (
        await client.post("/tasks", json={"kind": "export_csv", "params": {"table": "people"}}, headers=alice)
    ).json()
    finished = await wait_state(client, export["id"], "succeeded", "failed", headers=alice)
    assert finished["state"] == "succeeded", finished
    result_file = finished["result"]["file_id"]
    assert (await client.get(f"/files/{result_file}", headers=bob)).status_code == 404
    assert (await client.get(f"/files/{result_file}", headers=alice)).content == body
