"""Real server processes: crash and graceful-stop recovery, and the live event stream."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from tests.helpers.server import LiveServer, logged_steps, poll_task


def db_row(db_url: str, task_id: str) -> dict:
    import asyncio

    from sqlalchemy.ext.asyncio import create_async_engine

    async def read() -> dict:
        engine = create_async_engine(db_url)
        try:
            async with engine.connect() as conn:
                row = await conn.execute(
                    text("SELECT state, attempts, lease_token, checkpoint FROM tasks WHERE id = :t"), {"t": task_id}
                )
                return dict(row.mappings().one())
        finally:
            await engine.dispose()

    return asyncio.run(read())


def start_steps(server: LiveServer, steps: int, step_seconds: float) -> str:
    body = {"kind": "record_steps", "params": {"steps": steps, "step_seconds": step_seconds}}
    response = httpx.post(f"{server.url}/tasks", json=body, timeout=5)
    assert response.status_code == 201, response.text
    return response.json()["id"]


@pytest.fixture
def storage(tmp_path: Path) -> Path:
    return tmp_path / "storage"


def test_crash_mid_task_resumes_with_every_step_done_once(db_url, storage):
    server = LiveServer(db_url, storage).start()
    try:
        task_id = start_steps(server, steps=20, step_seconds=0.05)
        poll_task(server, task_id, lambda t: t["progress"]["done"] >= 5)
        server.kill()  # no shutdown hook runs: the lease is simply left behind
    finally:
        server.kill()
    with LiveServer(db_url, storage, port=server.port) as again:
        done = poll_task(again, task_id, lambda t: t["state"] == "succeeded")
        assert logged_steps(again, task_id) == list(range(1, 21))
        assert done["attempts"] == 2  # the crashed run counted


def test_graceful_stop_requeues_without_counting_an_attempt(db_url, storage):
    with LiveServer(db_url, storage) as server:
        task_id = start_steps(server, steps=30, step_seconds=0.05)
        poll_task(server, task_id, lambda t: t["progress"]["done"] >= 3)
        assert server.stop() in (0, -15)  # uvicorn re-raises SIGTERM once it has shut down
    row = db_row(db_url, task_id)
    assert (row["state"], row["attempts"], row["lease_token"]) == ("queued", 0, None)
    assert row["checkpoint"] is not None
    with LiveServer(db_url, storage) as again:
        done = poll_task(again, task_id, lambda t: t["state"] == "succeeded")
        assert done["attempts"] == 1
        assert logged_steps(again, task_id) == list(range(1, 31))


def test_paused_task_stays_paused_across_a_restart(db_url, storage):
    with LiveServer(db_url, storage) as server:
        task_id = start_steps(server, steps=50, step_seconds=0.02)
        poll_task(server, task_id, lambda t: t["progress"]["done"] >= 2)
        assert httpx.post(f"{server.url}/tasks/{task_id}/pause").status_code == 202
        paused = poll_task(server, task_id, lambda t: t["state"] == "paused")
    with LiveServer(db_url, storage) as again:
        time.sleep(0.5)  # give a (wrong) runner every chance to pick it up
        still = httpx.get(f"{again.url}/tasks/{task_id}").json()
        assert still["state"] == "paused"
        assert still["checkpoint"] == paused["checkpoint"]
        assert httpx.post(f"{again.url}/tasks/{task_id}/resume").status_code == 202
        poll_task(again, task_id, lambda t: t["state"] == "succeeded")
        assert logged_steps(again, task_id) == list(range(1, 51))


def read_events(response: httpx.Response) -> list[tuple[str, dict, str | None]]:
    events, kind, event_id = [], None, None
    for line in response.iter_lines():
        if line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("id: "):
            event_id = line[4:]
        elif line.startswith("data: "):
            events.append((kind, json.loads(line[6:]), event_id))
            kind, event_id = None, None
            if events[-1][0] == "end":
                break
    return events


def test_event_stream_shows_states_and_progress_live(db_url, storage):
    with LiveServer(db_url, storage) as server:
        body = {"kind": "process", "params": {"steps": 6, "step_seconds": 0.1}}
        task_id = httpx.post(f"{server.url}/tasks", json=body).json()["id"]
        with httpx.stream("GET", f"{server.url}/tasks/{task_id}/events", timeout=30) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            events = read_events(response)
        states = [data["state"] for kind, data, _ in events if kind == "state"]
        assert states[0] == "queued" and "running" in states and states[-1] == "succeeded"
        progress = [data["done"] for kind, data, _ in events if kind == "progress"]
        assert progress == sorted(progress) and len(set(progress)) >= 3
        assert events[-1][0] == "end" and events[-1][1]["state"] == "succeeded"

        # Reconnecting with Last-Event-ID replays only what came after it.
        last_state_id = next(event_id for kind, _, event_id in events if kind == "state")
        with httpx.stream(
            "GET", f"{server.url}/tasks/{task_id}/events", headers={"Last-Event-ID": last_state_id}
        ) as response:
            replay = read_events(response)
        replayed = [data["state"] for kind, data, _ in replay if kind == "state"]
        assert replayed == states[1:]
