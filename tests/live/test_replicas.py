"""Several server processes sharing one PostgreSQL: claims, control across replicas, failover."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from tests.helpers.server import LiveServer, logged_steps, poll_task


@pytest.fixture
def replicas(pg_url: str, tmp_path: Path):
    import asyncio

    from tests.helpers.database import clean_pg

    asyncio.run(clean_pg(pg_url))
    storage = tmp_path / "storage"
    first = LiveServer(pg_url, storage, TSM_MAX_CONCURRENT_TASKS=2).start()
    second = LiveServer(pg_url, storage, TSM_MAX_CONCURRENT_TASKS=2).start()
    try:
        yield first, second
    finally:
        for server in (first, second):
            server.stop()
            server.kill()


def test_replicas_share_the_work_and_each_step_runs_once(replicas):
    first, second = replicas
    body = {"kind": "record_steps", "params": {"steps": 6, "step_seconds": 0.05}}
    ids = [httpx.post(f"{first.url}/tasks", json=body).json()["id"] for _ in range(6)]
    runners = set()
    for task_id in ids:
        poll_task(second, task_id, lambda t: t["state"] == "succeeded")
        assert logged_steps(first, task_id) == list(range(1, 7))
        history = httpx.get(f"{second.url}/tasks/{task_id}/events", timeout=10).text
        runners |= {line.split("claimed by ")[1].split('"')[0] for line in history.splitlines() if "claimed by" in line}
    assert len(runners) == 2, f"both replicas claimed work: {runners}"


def test_control_reaches_the_replica_that_runs_the_task(replicas):
    first, second = replicas
    body = {"kind": "process", "params": {"steps": 400, "step_seconds": 0.05}}
    ids = [httpx.post(f"{first.url}/tasks", json=body).json()["id"] for _ in range(4)]
    tasks = [poll_task(first, task_id, lambda t: t["state"] == "running") for task_id in ids]
    ports = {first.process.pid: first, second.process.pid: second}
    for task in tasks:
        runner_pid = int(task["runner"].split(":")[1])
        other = second if ports[runner_pid] is first else first
        started = time.monotonic()
        assert httpx.post(f"{other.url}/tasks/{task['id']}/pause").status_code == 202
        poll_task(other, task["id"], lambda t: t["state"] == "paused")
        assert time.monotonic() - started < 3.0
        assert httpx.post(f"{other.url}/tasks/{task['id']}/cancel").status_code == 202
    for task in tasks:
        poll_task(first, task["id"], lambda t: t["state"] == "cancelled")


def test_a_dead_replicas_tasks_are_taken_over(replicas):
    first, second = replicas
    body = {"kind": "record_steps", "params": {"steps": 40, "step_seconds": 0.05}}
    task_id = httpx.post(f"{first.url}/tasks", json=body).json()["id"]
    task = poll_task(first, task_id, lambda t: t["state"] == "running" and t["progress"]["done"] >= 3)
    victim, survivor = (first, second) if int(task["runner"].split(":")[1]) == first.process.pid else (second, first)
    victim.kill()
    done = poll_task(survivor, task_id, lambda t: t["state"] == "succeeded", timeout=60)
    assert str(survivor.process.pid) in (done["runner"] or str(survivor.process.pid))
    assert logged_steps(survivor, task_id) == list(range(1, 41))
